package fs

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/ezfs/ezfs/crypto"
	"github.com/ezfs/ezfs/zones"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// node is one inode of the mount. Hard links share a node (go-fuse keys nodes by
// inode number), so the content lock is per inode.
type node struct {
	gofs.Inode
	fsys *FS

	// zone is nil outside zones. It is set when the node is created, from its parent or
	// its own zone marker, and only changes when MakeZone marks an empty directory.
	zone     atomic.Pointer[zones.Zone]
	zoneRoot bool // set with zone; a zone root directory

	// mu is the content lock of a regular file in a zone: every path that changes
	// contents or size holds it for writing; reads hold it for reading.
	mu sync.RWMutex
	// cc, size, sizeKnown and torn are guarded by mu. cc is the file's block cipher, built
	// once from the EDEK; size is the plaintext size, maintained by every write and
	// truncate once known.
	cc        *crypto.ContentCipher
	size      int64
	sizeKnown bool
	torn      bool // the backing file ends in bytes past size, left by a crash

	// fds are the backing descriptors of the node's open files. A file that has lost
	// its names (unlinked while open, or O_TMPFILE) has no backing path: it is reached
	// through one of them. Guarded by fdMu, which an operation through one holds, so
	// that the file's release cannot close it meanwhile. fdMu may be taken while mu is
	// held (an open records its descriptor), never the other way round.
	fdMu sync.Mutex
	fds  []int
}

// opened records fd, a new open file of the node.
func (n *node) opened(fd int) {
	n.fdMu.Lock()
	n.fds = append(n.fds, fd)
	n.fdMu.Unlock()
}

// closing forgets fd, an open file of the node about to be closed.
func (n *node) closing(fd int) {
	n.fdMu.Lock()
	defer n.fdMu.Unlock()
	for i, f := range n.fds {
		if f == fd {
			n.fds = append(n.fds[:i], n.fds[i+1:]...)
			return
		}
	}
}

// lost reports whether the node's file has lost all its names.
func (n *node) lost() bool {
	_, parent := n.Parent()
	return parent == nil && !n.IsRoot()
}

// procFD names the file open as the daemon's fd: opened or checked by this name, it
// is the file itself, even without any name of its own.
func procFD(fd int) string { return fmt.Sprintf("/proc/self/fd/%d", fd) }

// viaOpenFile calls fn with the backing descriptor of one of the node's open files;
// ENOENT if none is open.
func (n *node) viaOpenFile(fn func(fd int) error) error {
	n.fdMu.Lock()
	defer n.fdMu.Unlock()
	if len(n.fds) == 0 {
		return syscall.ENOENT
	}
	return fn(n.fds[0])
}

var (
	_ gofs.NodeLookuper       = (*node)(nil)
	_ gofs.NodeGetattrer      = (*node)(nil)
	_ gofs.NodeSetattrer      = (*node)(nil)
	_ gofs.NodeCreater        = (*node)(nil)
	_ gofs.NodeMkdirer        = (*node)(nil)
	_ gofs.NodeMknoder        = (*node)(nil)
	_ gofs.NodeSymlinker      = (*node)(nil)
	_ gofs.NodeLinker         = (*node)(nil)
	_ gofs.NodeRenamer        = (*node)(nil)
	_ gofs.NodeUnlinker       = (*node)(nil)
	_ gofs.NodeRmdirer        = (*node)(nil)
	_ gofs.NodeOpener         = (*node)(nil)
	_ gofs.NodeOpendirHandler = (*node)(nil)
	_ gofs.NodeReadlinker     = (*node)(nil)
	_ gofs.NodeStatfser       = (*node)(nil)
	_ gofs.NodeAccesser       = (*node)(nil)
	_ gofs.NodeGetxattrer     = (*node)(nil)
	_ gofs.NodeSetxattrer     = (*node)(nil)
	_ gofs.NodeRemovexattrer  = (*node)(nil)
	_ gofs.NodeListxattrer    = (*node)(nil)
	_ gofs.NodeTmpfiler       = (*node)(nil)
	_ gofs.NodeCopyFileRanger = (*node)(nil)
	_ gofs.NodeOnForgetter    = (*node)(nil)
	_ gofs.FileReaddirenter   = (*hidingDir)(nil)
	_ gofs.FileReleasedirer   = (*hidingDir)(nil)
	_ gofs.FileSeekdirer      = (*hidingDir)(nil)
	_ gofs.FileFsyncdirer     = (*hidingDir)(nil)
)

// rel is the node's path relative to the backing dir.
func (n *node) rel() string { return n.Path(n.fsys.root.EmbeddedInode()) }

// path is the node's backing path.
func (n *node) path() string { return filepath.Join(n.fsys.backing, n.rel()) }

func (n *node) child(name string) string { return filepath.Join(n.path(), name) }

// sameZone compares zones by ID: two nodes may hold different copies of one zone.
func sameZone(a, b *zones.Zone) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.ID == b.ID
}

// encrypted reports whether the node is a regular file inside a zone.
func (n *node) encrypted() bool {
	return n.zone.Load() != nil && n.StableAttr().Mode&syscall.S_IFMT == syscall.S_IFREG
}

// hides reports whether name in n is the hidden keystore folder.
func (n *node) hides(name string) bool {
	return n.fsys.hiddenName != "" && name == n.fsys.hiddenName && n.rel() == n.fsys.hiddenDir
}

func (f *FS) stableAttr(st *syscall.Stat_t) gofs.StableAttr {
	// As go-fuse's loopback: mix the device into the inode number so that a backing
	// tree spanning several file systems has no collisions, and keep plain inode
	// numbers on the backing dir's own device.
	swapped := (uint64(st.Dev) << 32) | (uint64(st.Dev) >> 32)
	swappedRoot := (f.dev << 32) | (f.dev >> 32)
	return gofs.StableAttr{Mode: st.Mode & syscall.S_IFMT, Ino: (swapped ^ swappedRoot) ^ st.Ino, Gen: 1}
}

// newChild makes (or finds) the node for a backing object of parent n. Its zone is the
// parent's; outside zones a directory carrying a zone marker starts a new zone.
func (n *node) newChild(ctx context.Context, name string, st *syscall.Stat_t, out *fuse.Attr) *gofs.Inode {
	ch := &node{fsys: n.fsys}
	if z := n.zone.Load(); z != nil {
		ch.zone.Store(z)
	} else if st.Mode&syscall.S_IFMT == syscall.S_IFDIR && name != "" {
		z, err := ZoneOf(n.child(name))
		if err != nil {
			n.fsys.log.Printf("read zone marker of %s: %v", n.child(name), err)
		}
		if z != nil {
			ch.zone.Store(z)
			ch.zoneRoot = true
		}
	}
	in := n.NewInode(ctx, ch, n.fsys.stableAttr(st))
	got := in.Operations().(*node)
	if got == ch && ch.encrypted() {
		n.fsys.liveMu.Lock()
		n.fsys.live[in.StableAttr().Ino] = ch
		n.fsys.liveMu.Unlock()
	}
	out.FromStat(st)
	got.fixSize(out, st.Size)
	return in
}

// OnForget drops the node from the live map once the kernel forgot it.
func (n *node) OnForget() {
	ino := n.StableAttr().Ino
	n.fsys.liveMu.Lock()
	if n.fsys.live[ino] == n {
		delete(n.fsys.live, ino)
	}
	n.fsys.liveMu.Unlock()
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if n.hides(name) {
		return nil, syscall.ENOENT
	}
	var st syscall.Stat_t
	p := n.child(name)
	if err := syscall.Lstat(p, &st); err != nil {
		return nil, gofs.ToErrno(err)
	}
	// Only names the kernel does not hold yet: a repeated lookup of a known file (entry
	// timeout) found its xattr block read moments ago.
	known := n.GetChild(name) != nil
	in := n.newChild(ctx, name, &st, &out.Attr)
	if !known && in.Operations().(*node).encrypted() {
		n.fsys.prefetch.add(p)
	}
	return in, 0
}

func (n *node) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if fh, ok := f.(*file); ok {
		return fh.Getattr(ctx, out)
	}
	if lf, ok := f.(gofs.FileGetattrer); ok && f != nil {
		return lf.Getattr(ctx, out)
	}
	var st syscall.Stat_t
	var err error
	switch {
	case n.IsRoot():
		err = syscall.Stat(n.path(), &st)
	case n.lost():
		err = n.viaOpenFile(func(fd int) error { return syscall.Fstat(fd, &st) })
	default:
		err = syscall.Lstat(n.path(), &st)
	}
	if err != nil {
		return gofs.ToErrno(err)
	}
	out.FromStat(&st)
	n.fixSize(&out.Attr, st.Size)
	return 0
}

func (n *node) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if f == nil && n.lost() {
		// fchmod, fchown and futimens of a file unlinked while open come without a
		// handle (so do the kernel's own drops of set-ID bits): such a file has no path,
		// so it is changed through a new open of it, as if through a handle.
		flags := syscall.O_RDONLY
		if _, ok := in.GetSize(); ok {
			flags = syscall.O_RDWR
		}
		fd, errno := n.openBacking(flags)
		if errno != 0 {
			return errno
		}
		if n.encrypted() {
			defer syscall.Close(fd)
			f = &file{n: n, fd: fd}
		} else {
			lf := gofs.NewLoopbackFile(fd).(*gofs.LoopbackFile) // closes fd from here on
			defer lf.Release(ctx)
			f = &plainHandle{LoopbackFile: lf, fd: fd, n: n}
		}
	}
	if h, ok := plain(f); ok {
		if errno := h.Setattr(ctx, in, out); errno != 0 {
			return errno
		}
		out.SetTimeout(attrTimeout)
		return 0
	}
	// With a handle (also for a file unlinked while open) the backing descriptor is
	// used; the path only without one.
	fd, p := -1, ""
	if fh, ok := f.(*file); ok {
		fd = fh.fd
	} else {
		p = n.path()
	}
	if m, ok := in.GetMode(); ok {
		var err error
		if fd >= 0 {
			err = syscall.Fchmod(fd, m)
		} else {
			err = syscall.Chmod(p, m)
		}
		if err != nil {
			return gofs.ToErrno(err)
		}
	}
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		su, sg := -1, -1
		if uok {
			su = int(uid)
		}
		if gok {
			sg = int(gid)
		}
		var err error
		if fd >= 0 {
			err = syscall.Fchown(fd, su, sg)
		} else {
			err = unix.Fchownat(unix.AT_FDCWD, p, su, sg, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return gofs.ToErrno(err)
		}
	}
	// Truncate before times, so an explicit mtime is not clobbered by the truncate.
	if sz, ok := in.GetSize(); ok {
		if errno := n.truncate(ctx, f, int64(sz)); errno != 0 {
			return errno
		}
	}
	mtime, mok := in.GetMTime()
	atime, aok := in.GetATime()
	if mok || aok {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if aok {
			ts[0] = unix.NsecToTimespec(atime.UnixNano())
		}
		if mok {
			ts[1] = unix.NsecToTimespec(mtime.UnixNano())
		}
		var err error
		if fd >= 0 {
			err = futimens(fd, ts)
		} else {
			err = unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return gofs.ToErrno(err)
		}
	}
	if errno := n.Getattr(ctx, f, out); errno != 0 {
		return errno
	}
	// go-fuse leaves the reply of SETATTR uncached; without a timeout the kernel asks
	// again (GETATTR) before the next chown or utimens of the same file.
	out.SetTimeout(attrTimeout)
	return 0
}

// futimens sets the times of the file open as fd: utimensat with no path, which
// x/sys/unix does not offer.
func futimens(fd int, ts []unix.Timespec) error {
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// truncate sets the size; for encrypted files under the content lock.
func (n *node) truncate(ctx context.Context, f gofs.FileHandle, size int64) syscall.Errno {
	if !n.encrypted() {
		return gofs.ToErrno(syscall.Truncate(n.path(), size))
	}
	if fh, ok := f.(*file); ok {
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.errno(fh.fd, n.truncateLocked(fh.fd, size))
	}
	fd, errno := n.openBacking(syscall.O_RDWR)
	if errno != 0 {
		return errno
	}
	defer syscall.Close(fd)
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.loadLocked(ctx, fd); err != nil {
		return n.errno(fd, err)
	}
	return n.errno(fd, n.truncateLocked(fd, size))
}

// preserveOwner gives a new backing object to the calling user, as the kernel would
// on the backing disk. The daemon runs as root; in a set-group-ID directory the
// inherited group stays.
func (n *node) preserveOwner(ctx context.Context, fd int, p string) {
	caller, ok := fuse.FromContext(ctx)
	if !ok || syscall.Geteuid() != 0 || (caller.Uid == 0 && caller.Gid == 0) {
		return
	}
	gid := int(caller.Gid)
	var pst syscall.Stat_t
	if syscall.Stat(n.path(), &pst) == nil && pst.Mode&syscall.S_ISGID != 0 {
		gid = -1
	}
	if fd >= 0 {
		_ = syscall.Fchown(fd, int(caller.Uid), gid)
	} else {
		_ = syscall.Lchown(p, int(caller.Uid), gid)
	}
}

// created finishes any create: owner, attributes, node.
func (n *node) created(ctx context.Context, name string, fd int, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	p := n.child(name)
	n.preserveOwner(ctx, fd, p)
	var st syscall.Stat_t
	var err error
	if fd >= 0 {
		err = syscall.Fstat(fd, &st)
	} else {
		err = syscall.Lstat(p, &st)
	}
	if err != nil {
		return nil, gofs.ToErrno(err)
	}
	return n.newChild(ctx, name, &st, &out.Attr), 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if n.hides(name) {
		return nil, syscall.EPERM
	}
	n.fsys.zoneMu.RLock()
	defer n.fsys.zoneMu.RUnlock()
	if err := syscall.Mkdir(n.child(name), mode); err != nil {
		return nil, gofs.ToErrno(err)
	}
	return n.created(ctx, name, -1, out)
}

func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if n.hides(name) {
		return nil, syscall.EPERM
	}
	if n.zone.Load() != nil && mode&syscall.S_IFMT == syscall.S_IFREG {
		ch, fh, _, errno := n.Create(ctx, name, syscall.O_EXCL|syscall.O_RDWR, mode&07777, out)
		if fh != nil {
			fh.(*file).Release(ctx)
		}
		return ch, errno
	}
	n.fsys.zoneMu.RLock()
	defer n.fsys.zoneMu.RUnlock()
	if err := syscall.Mknod(n.child(name), mode, int(rdev)); err != nil {
		return nil, gofs.ToErrno(err)
	}
	return n.created(ctx, name, -1, out)
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if n.hides(name) {
		return nil, syscall.EPERM
	}
	n.fsys.zoneMu.RLock()
	defer n.fsys.zoneMu.RUnlock()
	if err := syscall.Symlink(target, n.child(name)); err != nil {
		return nil, gofs.ToErrno(err)
	}
	return n.created(ctx, name, -1, out)
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	for l := 256; ; l *= 2 {
		buf := make([]byte, l)
		sz, err := syscall.Readlink(n.path(), buf)
		if err != nil {
			return nil, gofs.ToErrno(err)
		}
		if sz < len(buf) {
			return buf[:sz], 0
		}
	}
}

func (n *node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	t, ok := target.(*node)
	if !ok {
		return nil, syscall.EXDEV
	}
	if n.hides(name) {
		return nil, syscall.EPERM
	}
	n.fsys.zoneMu.RLock()
	defer n.fsys.zoneMu.RUnlock()
	if !sameZone(t.zone.Load(), n.zone.Load()) {
		return nil, syscall.EXDEV
	}
	var err error
	if t.lost() {
		// An O_TMPFILE file gets its first name (the kernel lets no other file that has
		// lost its names be linked).
		err = t.viaOpenFile(func(fd int) error {
			return unix.Linkat(fd, "", unix.AT_FDCWD, n.child(name), unix.AT_EMPTY_PATH)
		})
	} else {
		err = syscall.Link(t.path(), n.child(name))
	}
	if err != nil {
		return nil, gofs.ToErrno(err)
	}
	n.fsys.moved(n.zone.Load())
	var st syscall.Stat_t
	if err := syscall.Lstat(n.child(name), &st); err != nil {
		return nil, gofs.ToErrno(err)
	}
	return n.newChild(ctx, name, &st, &out.Attr), 0
}

func (n *node) childNode(name string) *node {
	if in := n.GetChild(name); in != nil {
		c, _ := in.Operations().(*node)
		return c
	}
	return nil
}

// isZoneRoot reports whether name in n is a zone root, asking the node tree first and
// the backing marker if the kernel has not looked it up.
func (n *node) isZoneRoot(name string) (*zones.Zone, bool) {
	if c := n.childNode(name); c != nil {
		return c.zone.Load(), c.zoneRoot
	}
	if n.zone.Load() != nil {
		return nil, false
	}
	z, _ := ZoneOf(n.child(name))
	return z, z != nil
}

func (n *node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	if n.hides(name) || np.hides(newName) {
		return syscall.EPERM
	}
	n.fsys.zoneMu.RLock()
	defer n.fsys.zoneMu.RUnlock()
	src, dst := n.zone.Load(), np.zone.Load()
	movedZone, srcIsRoot := n.isZoneRoot(name)
	_, dstIsRoot := np.isZoneRoot(newName)
	switch {
	case dstIsRoot:
		// Replacing a zone root would silently drop the zone.
		return syscall.EPERM
	case srcIsRoot:
		// A zone root moves with its whole subtree, but never into another zone.
		if dst != nil || flags&unix.RENAME_EXCHANGE != 0 {
			return syscall.EXDEV
		}
	case !sameZone(src, dst):
		return syscall.EXDEV
	}
	from, to := zones.Clean(filepath.Join(n.rel(), name)), zones.Clean(filepath.Join(np.rel(), newName))
	if err := unix.Renameat2(unix.AT_FDCWD, n.child(name), unix.AT_FDCWD, np.child(newName), uint(flags)); err != nil {
		return gofs.ToErrno(err)
	}
	n.fsys.moved(src)
	if srcIsRoot && n.fsys.hooks != nil {
		n.fsys.hooks.ZoneMoved(movedZone, from, to)
	}
	return 0
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	if n.hides(name) {
		return syscall.ENOENT
	}
	return gofs.ToErrno(syscall.Unlink(n.child(name)))
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	if n.hides(name) {
		return syscall.ENOENT
	}
	n.fsys.zoneMu.RLock()
	defer n.fsys.zoneMu.RUnlock()
	z, isRoot := n.isZoneRoot(name)
	if err := syscall.Rmdir(n.child(name)); err != nil {
		return gofs.ToErrno(err)
	}
	if isRoot && n.fsys.hooks != nil {
		n.fsys.hooks.ZoneRemoved(z, zones.Clean(filepath.Join(n.rel(), name)))
	}
	return 0
}

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	ds, errno := gofs.NewLoopbackDirStream(n.path())
	if errno != 0 {
		return nil, 0, errno
	}
	if n.fsys.hiddenName != "" && n.rel() == n.fsys.hiddenDir {
		return &hidingDir{inner: ds, hide: n.fsys.hiddenName}, 0, 0
	}
	return ds, 0, 0
}

func (n *node) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	return gofs.NewLoopbackDirStream(n.path())
}

// hidingDir is a directory stream that leaves out one name.
type hidingDir struct {
	inner gofs.DirStream
	hide  string
}

func (d *hidingDir) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	for {
		e, errno := d.inner.(gofs.FileReaddirenter).Readdirent(ctx)
		if e == nil || errno != 0 || e.Name != d.hide {
			return e, errno
		}
	}
}

func (d *hidingDir) Releasedir(ctx context.Context, flags uint32) {
	d.inner.(gofs.FileReleasedirer).Releasedir(ctx, flags)
}

func (d *hidingDir) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	return d.inner.(gofs.FileSeekdirer).Seekdir(ctx, off)
}

func (d *hidingDir) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	return d.inner.(gofs.FileFsyncdirer).Fsyncdir(ctx, flags)
}

// Access answers access(2) when the kernel does not check permissions itself (no
// default_permissions, so the caller is root): as the daemon, which is root too.
func (n *node) Access(ctx context.Context, mask uint32) syscall.Errno {
	if n.lost() {
		return gofs.ToErrno(n.viaOpenFile(func(fd int) error {
			return unix.Faccessat(unix.AT_FDCWD, procFD(fd), mask, 0)
		}))
	}
	return gofs.ToErrno(unix.Faccessat(unix.AT_FDCWD, n.path(), mask, 0))
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	var s syscall.Statfs_t
	if err := syscall.Statfs(n.path(), &s); err != nil {
		return gofs.ToErrno(err)
	}
	out.FromStatfsT(&s)
	return 0
}

func hiddenXattr(attr string) bool { return strings.HasPrefix(attr, zones.XattrPrefix) }

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if hiddenXattr(attr) {
		return 0, syscall.ENODATA
	}
	var sz int
	var err error
	if n.lost() {
		err = n.viaOpenFile(func(fd int) (err error) { sz, err = unix.Fgetxattr(fd, attr, dest); return err })
	} else {
		sz, err = unix.Lgetxattr(n.path(), attr, dest)
	}
	return uint32(sz), gofs.ToErrno(err)
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if hiddenXattr(attr) {
		return syscall.EPERM
	}
	if n.lost() {
		return gofs.ToErrno(n.viaOpenFile(func(fd int) error { return unix.Fsetxattr(fd, attr, data, int(flags)) }))
	}
	return gofs.ToErrno(unix.Lsetxattr(n.path(), attr, data, int(flags)))
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if hiddenXattr(attr) {
		return syscall.EPERM
	}
	if n.lost() {
		return gofs.ToErrno(n.viaOpenFile(func(fd int) error { return unix.Fremovexattr(fd, attr) }))
	}
	return gofs.ToErrno(unix.Lremovexattr(n.path(), attr))
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	list := func(buf []byte) (int, error) { return unix.Llistxattr(n.path(), buf) }
	if n.lost() {
		list = func(buf []byte) (sz int, err error) {
			err = n.viaOpenFile(func(fd int) (err error) { sz, err = unix.Flistxattr(fd, buf); return err })
			return sz, err
		}
	}
	sz, err := list(nil)
	if err != nil {
		return 0, gofs.ToErrno(err)
	}
	buf := make([]byte, sz)
	sz, err = list(buf)
	if err != nil {
		return 0, gofs.ToErrno(err)
	}
	var out []byte
	for _, a := range strings.Split(string(buf[:sz]), "\x00") {
		if a != "" && !hiddenXattr(a) {
			out = append(append(out, a...), 0)
		}
	}
	if len(dest) == 0 {
		return uint32(len(out)), 0
	}
	if len(out) > len(dest) {
		return uint32(len(out)), syscall.ERANGE
	}
	return uint32(copy(dest, out)), 0
}

func (n *node) CopyFileRange(ctx context.Context, fhIn gofs.FileHandle, offIn uint64, out *gofs.Inode, fhOut gofs.FileHandle, offOut uint64, length uint64, flags uint64) (uint32, syscall.Errno) {
	// Encrypted files cannot share ciphertext; the kernel falls back to read and
	// write. Plain files copy in the backing file system.
	in, ok1 := plain(fhIn)
	o, ok2 := plain(fhOut)
	if !ok1 || !ok2 {
		return 0, syscall.EOPNOTSUPP
	}
	a, b := int64(offIn), int64(offOut)
	cnt, err := unix.CopyFileRange(in.fd, &a, o.fd, &b, int(length), int(flags))
	return uint32(cnt), gofs.ToErrno(err)
}
