// Package fs owns the go-fuse node tree of an ezfs mount: a passthrough of the backing
// directory outside zones, and inside zones regular files whose contents are sealed in
// 4 KiB AES-256-GCM blocks under a per-file data key kept (wrapped) in an xattr.
//
// Zone membership is a property of the node tree: a directory carrying the zone marker
// xattr starts a zone, and every node below it belongs to it. Renames and hard links
// that would cross a zone boundary fail with EXDEV.
package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ezfs/ezfs/crypto"
	"github.com/ezfs/ezfs/zones"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// FileKeys seals and opens per-file data keys; zones.Keys implements it.
type FileKeys interface {
	NewFileKey(ctx context.Context, z *zones.Zone) (dek, edek []byte, id crypto.FileID, err error)
	OpenFileKey(ctx context.Context, z *zones.Zone, edek []byte) (dek []byte, e *crypto.EDEK, err error)
}

// Hooks are told about zone roots that move or disappear through the mount, so the
// keystore's zone table follows.
type Hooks interface {
	ZoneMoved(z *zones.Zone, from, to string)
	ZoneRemoved(z *zones.Zone, path string)
}

// Options configure a file system.
type Options struct {
	// Backing is the absolute path of the backing directory.
	Backing string
	// Hidden is an absolute path inside Backing that the mount must not show (the
	// keystore folder); empty for none.
	Hidden string
	Keys   FileKeys
	Hooks  Hooks
	Logger *log.Logger
}

// FS is one mounted backing directory.
type FS struct {
	backing string
	dev     uint64
	keys    FileKeys
	hooks   Hooks
	log     *log.Logger
	root    *node
	// noPassthrough and killPriv are set once, before the mount serves. killPriv: the
	// daemon drops set-user-ID on marked writes (FUSE_HANDLE_KILLPRIV_V2).
	noPassthrough, killPriv bool

	// hiddenDir/hiddenName locate the hidden folder: hiddenDir is its parent, relative
	// to the backing dir ("" for the root).
	hiddenDir, hiddenName string

	// zoneMu orders marking a directory as a zone root (write side) against every
	// operation that creates or moves names (read side), so no file is created in a
	// directory while it becomes a zone.
	zoneMu sync.RWMutex

	// live maps inode numbers to the encrypted nodes the kernel knows, so the reencrypt
	// worker can take a file's content lock. Guarded by liveMu.
	liveMu sync.Mutex
	live   map[uint64]*node
	// stripes stand in for the content lock of files the kernel does not know.
	stripes [64]sync.Mutex
	// moves counts renames and hard links per zone (crypto.ZoneID → *atomic.Uint64).
	moves sync.Map
	// prefetch warms the xattr blocks of zone files as they are looked up.
	prefetch xattrPrefetch
}

// New builds the file system for a backing directory.
func New(o Options) (*FS, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(o.Backing, &st); err != nil {
		return nil, fmt.Errorf("backing dir: %w", err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return nil, fmt.Errorf("backing dir %s: not a directory", o.Backing)
	}
	f := &FS{backing: o.Backing, dev: uint64(st.Dev), keys: o.Keys, hooks: o.Hooks, log: o.Logger, live: map[uint64]*node{}}
	if f.log == nil {
		f.log = log.New(os.Stderr, "ezfs: ", log.LstdFlags)
	}
	if o.Hidden != "" {
		rel, err := filepath.Rel(o.Backing, o.Hidden)
		if err == nil && rel != "." && !strings.HasPrefix(rel, "..") {
			f.hiddenDir, f.hiddenName = filepath.Dir(rel), filepath.Base(rel)
			if f.hiddenDir == "." {
				f.hiddenDir = ""
			}
		}
	}
	f.root = &node{fsys: f}
	return f, nil
}

// MountOptions are the user-facing options of a mount.
type MountOptions struct {
	AllowOther bool
	// DefaultPermissions makes the kernel check permissions; implied by AllowOther.
	DefaultPermissions bool
	// NoPassthrough serves the data of files outside zones through the daemon instead
	// of the kernel's FUSE passthrough.
	NoPassthrough bool
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
			case ok && f.set:
				mo.Flags |= f.flag
			case ok:
				mo.Flags &^= f.flag
			default:
				return mo, fmt.Errorf("unknown mount option %q (known: allow_other, default_permissions, nopassthrough, %s)", w, knownFlags())
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
// disk directly show within this time.
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
	sec := attrTimeout
	var kopts []string
	// shared: the kernel checks permissions (default_permissions) for several users.
	shared := mo.AllowOther || mo.DefaultPermissions
	if shared {
		kopts = append(kopts, "default_permissions")
	}
	// Negative entries are cached as long as positive ones: every create starts with a
	// lookup of a name that is not there. Names made through the mount invalidate them.
	opts := &gofs.Options{
		EntryTimeout:    &sec,
		AttrTimeout:     &sec,
		NegativeTimeout: &sec,
		MountOptions: fuse.MountOptions{
			Name:              "ezfs",
			FsName:            f.backing,
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
	raw := newRawFS(gofs.NewNodeFS(f.root, opts), f.log)
	if shared {
		// The umask is ours to apply then, so that a default ACL can replace it; and
		// an ACL set by a caller outside the file's group must drop set-group-ID.
		opts.MountOptions.ExtraCapabilities |= fuse.CAP_DONT_MASK | fuse.CAP_SETXATTR_EXT
		raw.acls = true
	}
	f.noPassthrough = mo.NoPassthrough
	spareProcs()
	srv, err := fuse.NewServer(raw, mountpoint, &opts.MountOptions)
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

// spareProcsOnce guards the one raise of GOMAXPROCS per process (tests mount many times).
var spareProcsOnce sync.Once

// spareProcs gives the Go scheduler two more Ps than it would use. go-fuse keeps one or
// two goroutines blocked in read(2) on /dev/fuse between requests; on a 2-CPU machine
// they hold every P, so the runtime's sysmon hands each P to a fresh thread and the
// reader, woken by the next request, must wait for a P back: two thread switches per
// request, which cost a fifth of the rate of synchronous 4 KiB reads and a third of
// streaming reads from a zone (docs/DESIGN.md). With idle Ps left over nothing is
// handed off. A GOMAXPROCS the user set is kept.
func spareProcs() {
	spareProcsOnce.Do(func() {
		if os.Getenv("GOMAXPROCS") == "" {
			runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 2)
		}
	})
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

// MakeZone marks the empty directory rel (relative to the backing dir) as the root of
// zone z. It refuses non-directories, non-empty directories, and the mount root.
func (f *FS) MakeZone(rel string, z *zones.Zone) error {
	rel = zones.Clean(rel)
	if rel == "" {
		return fmt.Errorf("the mount root cannot be a zone: it holds the keystore")
	}
	f.zoneMu.Lock()
	defer f.zoneMu.Unlock()
	p := filepath.Join(f.backing, rel)
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return fmt.Errorf("/%s: %w", rel, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("/%s %w", rel, zones.ErrNotDir)
	}
	d, err := os.Open(p)
	if err != nil {
		return err
	}
	names, err := d.Readdirnames(1)
	d.Close()
	if len(names) > 0 {
		return fmt.Errorf("/%s %w", rel, zones.ErrNotEmpty)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if err := unix.Lsetxattr(p, zones.XattrZone, z.Marker(), 0); err != nil {
		return fmt.Errorf("mark /%s as a zone: %w", rel, err)
	}
	if n := f.lookupKnown(rel); n != nil {
		n.zone.Store(z)
		n.zoneRoot = true
	}
	return nil
}

// lookupKnown returns the node for rel if the kernel knows it.
func (f *FS) lookupKnown(rel string) *node {
	in := f.root.EmbeddedInode()
	for _, c := range strings.Split(rel, "/") {
		if c == "" {
			continue
		}
		if in = in.GetChild(c); in == nil {
			return nil
		}
	}
	n, _ := in.Operations().(*node)
	return n
}

// ZoneOf reads the zone marker of a backing directory; nil if it is no zone root.
func ZoneOf(path string) (*zones.Zone, error) {
	buf := make([]byte, 256)
	sz, err := unix.Lgetxattr(path, zones.XattrZone, buf)
	if errors.Is(err, unix.ENODATA) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return zones.ParseMarker(buf[:sz])
}

// LockFile takes the content lock of the backing file st describes: its node's lock if
// the kernel knows the file, else a lock that stands in for it.
func (f *FS) LockFile(st *unix.Stat_t) func() {
	ino := f.stableAttr(&syscall.Stat_t{Dev: st.Dev, Ino: st.Ino}).Ino
	f.liveMu.Lock()
	n := f.live[ino]
	f.liveMu.Unlock()
	if n != nil {
		n.mu.Lock()
		return n.mu.Unlock
	}
	m := &f.stripes[ino%uint64(len(f.stripes))]
	m.Lock()
	return m.Unlock
}

// Moves counts the renames and hard links made in zone since the mount.
func (f *FS) Moves(zone crypto.ZoneID) uint64 {
	if c, ok := f.moves.Load(zone); ok {
		return c.(*atomic.Uint64).Load()
	}
	return 0
}

func (f *FS) moved(z *zones.Zone) {
	if z == nil {
		return
	}
	c, _ := f.moves.LoadOrStore(z.ID, new(atomic.Uint64))
	c.(*atomic.Uint64).Add(1)
}
