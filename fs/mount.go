package fs

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// MountOptions are the user-facing options of a mount.
type MountOptions struct {
	AllowOther bool
	// DefaultPermissions makes the kernel check permissions; implied by AllowOther.
	DefaultPermissions bool
	// NoPassthrough serves the data of files outside zones through the daemon instead
	// of the kernel's FUSE passthrough.
	NoPassthrough bool
	// SharedStorage sets the kernel's and the daemon's caches for a backing directory
	// that other daemons (other hosts) change too (shared.go).
	SharedStorage bool
	Debug         bool
	// Flags are mount(2) flags from options such as ro, noexec, noatime.
	Flags uintptr
	// Options are the -o words as given, for display.
	Options []string
}

// mountFlags are the -o words that are mount(2) flags: set (true) or cleared (false).
var mountFlags = map[string]struct {
	flag uintptr
	set  bool
}{
	"ro": {unix.MS_RDONLY, true}, "rw": {unix.MS_RDONLY, false},
	"nosuid": {unix.MS_NOSUID, true}, "suid": {unix.MS_NOSUID, false},
	"nodev": {unix.MS_NODEV, true}, "dev": {unix.MS_NODEV, false},
	"noexec": {unix.MS_NOEXEC, true}, "exec": {unix.MS_NOEXEC, false},
	"noatime": {unix.MS_NOATIME, true}, "atime": {unix.MS_NOATIME, false},
	"nodiratime": {unix.MS_NODIRATIME, true}, "diratime": {unix.MS_NODIRATIME, false},
	"relatime": {unix.MS_RELATIME, true}, "norelatime": {unix.MS_RELATIME, false},
	"strictatime": {unix.MS_STRICTATIME, true},
	"sync":        {unix.MS_SYNCHRONOUS, true}, "async": {unix.MS_SYNCHRONOUS, false},
	"dirsync":  {unix.MS_DIRSYNC, true},
	"lazytime": {unix.MS_LAZYTIME, true}, "nolazytime": {unix.MS_LAZYTIME, false},
}

// ParseMountOptions reads -o values (comma-separated words). Unknown words are refused
// here rather than by the kernel, whose error would not name them.
func ParseMountOptions(values []string) (MountOptions, error) {
	mo := MountOptions{Flags: unix.MS_NOSUID | unix.MS_NODEV}
	for _, v := range values {
		for _, w := range strings.Split(v, ",") {
			w = strings.TrimSpace(w)
			switch f, ok := mountFlags[w]; {
			case w == "":
				continue
			case w == "allow_other":
				mo.AllowOther = true
			case w == "default_permissions":
				mo.DefaultPermissions = true
			case w == "nopassthrough":
				mo.NoPassthrough = true
			case w == "sharedstorage":
				mo.SharedStorage = true
			case ok && f.set:
				mo.Flags |= f.flag
			case ok:
				mo.Flags &^= f.flag
			default:
				return mo, fmt.Errorf("unknown mount option %q (known: allow_other, default_permissions, nopassthrough, sharedstorage, %s)", w, knownFlags())
			}
			mo.Options = append(mo.Options, w)
		}
	}
	return mo, nil
}

func knownFlags() string {
	names := make([]string, 0, len(mountFlags))
	for n := range mountFlags {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// attrTimeout is how long the kernel may cache entries, attributes and negative
// entries. Names made through the mount invalidate them; changes made on the backing
// disk directly show within this time. A sharedstorage mount caches none (shared.go).
const attrTimeout = time.Second

// Mount serves f at mountpoint. With allow_other the kernel checks permissions
// (default_permissions), so several users can share a mount as they share the backing
// disk. Without it only the mounting user, root, reaches the mount, and the daemon acts
// as root on the backing disk: the same checks, without a GETATTR of the parent
// directory before every create and unlink.
func (f *FS) Mount(mountpoint string, mo MountOptions) (*fuse.Server, error) {
	// The caller's umask is applied by the kernel, or on shared mounts by rawFS; ours
	// must not apply a second one.
	syscall.Umask(0)
	f.sharedStorage = mo.SharedStorage
	sec := f.attrTimeout()
	var kopts []string
	// shared: the kernel checks permissions (default_permissions) for several users.
	shared := mo.AllowOther || mo.DefaultPermissions
	if shared {
		kopts = append(kopts, "default_permissions")
	}
	// Negative entries are cached as long as positive ones: every create starts with a
	// lookup of a name that is not there. Names made through the mount invalidate them.
	opts := &gofs.Options{
		// Modes are the backing files' own: a file made with mode 0000 has mode 0000
		// (go-fuse would show such a file as 0644).
		NullPermissions: true,
		EntryTimeout:    &sec,
		AttrTimeout:     &sec,
		NegativeTimeout: &sec,
		MountOptions: fuse.MountOptions{
			Name:              "ezfs",
			FsName:            f.root.Path,
			AllowOther:        mo.AllowOther,
			DirectMountStrict: true,
			DirectMountFlags:  mo.Flags,
			MaxWrite:          1 << 20,
			EnableLocks:       true,
			// Where the kernel checks permissions it must read ACLs too, or a named
			// entry that denies would be ignored for the mode bits (docs/DESIGN.md).
			EnableAcl:     shared,
			DisableSplice: true,
			Debug:         mo.Debug,
			Options:       kopts,
		},
		Logger: f.log,
	}
	// Only the mounting user, root, reaches a private mount, and root may set these
	// bits on any file anyway: there the daemon takes over dropping set-user-ID on
	// write (rawFS), which saves a GETXATTR per write. On a shared mount the kernel
	// keeps that duty, because writes it passes to the backing file itself (kernel
	// passthrough, copy_file_range) never reach the daemon marked.
	if !mo.AllowOther {
		opts.MountOptions.ExtraCapabilities |= fuse.CAP_HANDLE_KILLPRIV_V2
		f.killPriv = true
	}
	raw := newRawFS(gofs.NewNodeFS(f.top, opts), f.log)
	if shared {
		// The umask is ours to apply then, so that a default ACL can replace it; and
		// an ACL set by a caller outside the file's group must drop set-group-ID.
		opts.MountOptions.ExtraCapabilities |= fuse.CAP_DONT_MASK | fuse.CAP_SETXATTR_EXT
		raw.acls = true
		// Objects are made as their caller, so the disk's quota applies (caller.go).
		raw.callers = true
	}
	f.noPassthrough = mo.NoPassthrough
	f.shared = shared
	var served fuse.RawFileSystem = raw
	if f.met != nil {
		served = &meteredFS{RawFileSystem: raw, m: f.met}
	}
	srv, err := newServer(served, mountpoint, &opts.MountOptions)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	f.raiseReadahead(mountpoint)
	return srv, nil
}

// readaheadKB is the kernel readahead of the mount. FUSE starts at 128 KiB. A window
// of four 1 MiB READ requests (MaxWrite) keeps several in flight, so while one is
// decrypted on one CPU the next is read from the backing disk on the other
// (BENCHMARKS.md).
const readaheadKB = 4096

// raiseReadahead sets the mount's readahead through its backing device info; without
// permission it leaves the kernel default.
func (f *FS) raiseReadahead(mountpoint string) {
	var st unix.Stat_t
	if err := unix.Stat(mountpoint, &st); err != nil {
		return
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err := os.WriteFile(p, []byte(fmt.Sprint(readaheadKB)), 0); err != nil {
		f.log.Printf("readahead of %s stays at the kernel default: %v", mountpoint, err)
	}
}
