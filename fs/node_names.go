package fs

import (
	"context"
	"syscall"

	"github.com/ezfs/ezfs/backing"
	"github.com/ezfs/ezfs/zones"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// make creates entry name of n with mk (given n's descriptor) and returns its node.
func (n *node) make(ctx context.Context, name string, out *fuse.EntryOut, mk func(dirfd int) error) (*gofs.Inode, syscall.Errno) {
	n.fsys.zoneMu.RLock()
	defer n.fsys.zoneMu.RUnlock()
	d, errno := n.createIn()
	if errno != 0 {
		return nil, errno
	}
	defer d.release()
	if err := n.fsys.asCaller(ctx, func() error { return mk(d.fd) }); err != nil {
		return nil, gofs.ToErrno(err)
	}
	return n.created(ctx, d.fd, name, -1, out)
}

// created finishes any create of entry name in the directory open as dirfd, given
// the new object's descriptor fd when there is one: owner, attributes, node.
func (n *node) created(ctx context.Context, dirfd int, name string, fd int, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	n.preserveOwner(ctx, dirfd, name, fd)
	var st unix.Stat_t
	var err error
	if fd >= 0 {
		err = backing.Stat(fd, &st)
	} else {
		err = backing.Lstat(dirfd, name, &st)
	}
	if err != nil {
		return nil, gofs.ToErrno(err)
	}
	// A new directory is no zone root: its marker need not be read.
	return n.newChild(ctx, name, -1, &st, &out.Attr), 0
}

// preserveOwner gives a new backing object to the calling user, as the kernel would
// on the backing disk, where the daemon did not already create it as the caller
// (asCaller). In a set-group-ID directory the inherited group stays.
func (n *node) preserveOwner(ctx context.Context, dirfd int, name string, fd int) {
	caller, ok := fuse.FromContext(ctx)
	if !ok || !daemonIsRoot || (caller.Uid == 0 && caller.Gid == 0) || n.fsys.byCaller(ctx) {
		return
	}
	gid := int(caller.Gid)
	var pst unix.Stat_t
	if backing.Stat(dirfd, &pst) == nil && pst.Mode&syscall.S_ISGID != 0 {
		gid = -1
	}
	if fd >= 0 {
		_ = backing.Chown(fd, int(caller.Uid), gid)
	} else {
		_ = unix.Fchownat(dirfd, name, int(caller.Uid), gid, unix.AT_SYMLINK_NOFOLLOW)
	}
}

func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if n.zone.Load() != nil && mode&syscall.S_IFMT == syscall.S_IFREG {
		ch, fh, _, errno := n.Create(ctx, name, syscall.O_EXCL|syscall.O_RDWR, mode&07777, out)
		if fh != nil {
			fh.(*file).Release(ctx)
		}
		return ch, errno
	}
	return n.make(ctx, name, out, func(dirfd int) error { return backing.Mknod(dirfd, name, mode, int(rdev)) })
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return n.make(ctx, name, out, func(dirfd int) error { return backing.Symlink(target, dirfd, name) })
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	var target []byte
	errno := n.withSelf(func(fd int) (err error) { target, err = backing.Readlink(fd, ""); return err })
	return target, errno
}

func (n *node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	t, ok := target.(*node)
	if !ok {
		return nil, syscall.EXDEV
	}
	n.fsys.zoneMu.RLock()
	defer n.fsys.zoneMu.RUnlock()
	if !sameZone(t.zone.Load(), n.zone.Load()) {
		return nil, syscall.EXDEV
	}
	if errno := n.usable(); errno != 0 {
		return nil, errno
	}
	d, errno := n.dir()
	if errno != 0 {
		return nil, errno
	}
	defer d.release()
	link := func(fd int) error { return backing.Link(fd, d.fd, name) }
	if t.lost() {
		// An O_TMPFILE file gets its first name (the kernel lets no other file that has
		// lost its names be linked).
		errno = gofs.ToErrno(t.viaOpenFile(link))
	} else {
		errno = t.withSelf(link)
	}
	if errno != 0 {
		return nil, errno
	}
	n.fsys.moved(n.zone.Load())
	var st unix.Stat_t
	if err := backing.Lstat(d.fd, name, &st); err != nil {
		return nil, gofs.ToErrno(err)
	}
	return n.newChild(ctx, name, -1, &st, &out.Attr), 0
}

// entryZone reports the zone that entry name of n roots, if it is a zone root: from
// the node tree if the kernel knows it, else from the registry by the identity st.
func (n *node) entryZone(name string, st *unix.Stat_t) (*zones.Zone, bool) {
	if c := n.childNode(name); c != nil {
		return c.zone.Load(), c.zoneRoot
	}
	if n.zone.Load() != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, false
	}
	if e := n.fsys.zones.ByInode(st.Dev, st.Ino); e != nil {
		return e.Zone, true
	}
	return nil, false
}

func (n *node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	n.fsys.zoneMu.RLock()
	defer n.fsys.zoneMu.RUnlock()
	d, errno := n.dir()
	if errno != 0 {
		return errno
	}
	defer d.release()
	nd, errno := np.dir()
	if errno != 0 {
		return errno
	}
	defer nd.release()
	var sst, dst unix.Stat_t
	if err := backing.Lstat(d.fd, name, &sst); err != nil {
		return gofs.ToErrno(err)
	}
	dstErr := backing.Lstat(nd.fd, newName, &dst)
	if n.fsys.isHidden(&sst) || (dstErr == nil && n.fsys.isHidden(&dst)) {
		return syscall.ENOENT
	}
	srcZone, dstZone := n.zone.Load(), np.zone.Load()
	_, srcIsRoot := n.entryZone(name, &sst)
	dstIsRoot := false
	if dstErr == nil {
		_, dstIsRoot = np.entryZone(newName, &dst)
	}
	switch {
	case dstIsRoot:
		// Replacing a zone root would silently drop the zone.
		return syscall.EPERM
	case srcIsRoot:
		// A zone root moves with its whole subtree, but never into another zone.
		if dstZone != nil || flags&unix.RENAME_EXCHANGE != 0 {
			return syscall.EXDEV
		}
	case !sameZone(srcZone, dstZone):
		return syscall.EXDEV
	}
	if err := backing.Rename(d.fd, name, nd.fd, newName, uint(flags)); err != nil {
		return gofs.ToErrno(err)
	}
	n.fsys.moved(srcZone)
	if srcZone == nil && n.fsys.hooks != nil {
		from, to := n.childRel(name), np.childRel(newName)
		exchanged := flags&unix.RENAME_EXCHANGE != 0 && dst.Mode&unix.S_IFMT == unix.S_IFDIR
		n.fsys.renamedDirs(from, to, sst.Mode&unix.S_IFMT == unix.S_IFDIR, exchanged)
	}
	return 0
}

// renamedDirs tells the hooks that directory from (if isDir) moved to to, and, for an
// exchange, that the directory at to moved to from: the zones in them moved along.
func (f *FS) renamedDirs(from, to string, isDir, exchanged bool) {
	const aside = "\x00exchange"
	switch {
	case isDir && exchanged:
		f.hooks.Renamed(from, aside)
		f.hooks.Renamed(to, from)
		f.hooks.Renamed(aside, to)
	case isDir:
		f.hooks.Renamed(from, to)
	case exchanged:
		f.hooks.Renamed(to, from)
	}
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	d, errno := n.dir()
	if errno != 0 {
		return errno
	}
	defer d.release()
	return gofs.ToErrno(backing.Unlink(d.fd, name))
}
