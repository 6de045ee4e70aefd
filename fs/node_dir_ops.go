package fs

import (
	"context"
	"syscall"

	"github.com/ezfs/ezfs/backing"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

var (
	_ gofs.FileReaddirenter = (*hidingDir)(nil)
	_ gofs.FileReleasedirer = (*hidingDir)(nil)
	_ gofs.FileSeekdirer    = (*hidingDir)(nil)
	_ gofs.FileFsyncdirer   = (*hidingDir)(nil)
)

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return n.make(ctx, name, out, func(dirfd int) error { return backing.Mkdir(dirfd, name, mode) })
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	n.fsys.zoneMu.RLock()
	defer n.fsys.zoneMu.RUnlock()
	d, errno := n.dir()
	if errno != 0 {
		return errno
	}
	defer d.release()
	var st unix.Stat_t
	if err := backing.Lstat(d.fd, name, &st); err != nil {
		return gofs.ToErrno(err)
	}
	if n.fsys.isHidden(&st) {
		return syscall.ENOENT
	}
	if err := backing.Rmdir(d.fd, name); err != nil {
		return gofs.ToErrno(err)
	}
	if n.zone.Load() != nil || n.fsys.hooks == nil {
		return 0
	}
	if e := n.fsys.zones.ByInode(st.Dev, st.Ino); e != nil {
		n.fsys.hooks.ZoneRemoved(e.Zone)
	}
	return 0
}

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	ds, errno := n.openDirStream()
	if errno != 0 {
		return nil, 0, errno
	}
	return ds, 0, 0
}

// openDirStream lists directory n, leaving out the hidden folder.
func (n *node) openDirStream() (gofs.FileHandle, syscall.Errno) {
	d, errno := n.dir()
	if errno != 0 {
		return nil, errno
	}
	fd, err := backing.OpenIn(d.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY, 0)
	d.release()
	if err != nil {
		return nil, gofs.ToErrno(err)
	}
	var st unix.Stat_t
	if err := backing.Stat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, gofs.ToErrno(err)
	}
	if !n.fsys.hasHidden || [2]uint64{st.Dev, st.Ino} != n.fsys.hiddenParent {
		return gofs.NewLoopbackDirStreamFd(fd) // closes fd from here on
	}
	// The directory that holds the hidden folder: its entries are checked by their
	// own identity (a folder that is a mount point lists the covered inode).
	dirfd, err := unix.Dup(fd)
	if err != nil {
		unix.Close(fd)
		return nil, gofs.ToErrno(err)
	}
	ds, errno := gofs.NewLoopbackDirStreamFd(fd)
	if errno != 0 {
		unix.Close(dirfd)
		return nil, errno
	}
	return &hidingDir{inner: ds, dirfd: dirfd, fsys: n.fsys}, 0
}

// hidingDir is a directory stream that leaves out the hidden folder.
type hidingDir struct {
	inner gofs.DirStream
	dirfd int // the listed directory, for fstatat; closed by Releasedir
	fsys  *FS
}

func (d *hidingDir) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	for {
		e, errno := d.inner.(gofs.FileReaddirenter).Readdirent(ctx)
		if e == nil || errno != 0 || !d.hides(e) {
			return e, errno
		}
	}
}

func (d *hidingDir) hides(e *fuse.DirEntry) bool {
	if e.Name == "." || e.Name == ".." || e.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return false
	}
	var st unix.Stat_t
	return backing.Lstat(d.dirfd, e.Name, &st) == nil && d.fsys.isHidden(&st)
}

func (d *hidingDir) Releasedir(ctx context.Context, flags uint32) {
	unix.Close(d.dirfd)
	d.inner.(gofs.FileReleasedirer).Releasedir(ctx, flags)
}

func (d *hidingDir) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	return d.inner.(gofs.FileSeekdirer).Seekdir(ctx, off)
}

func (d *hidingDir) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	return d.inner.(gofs.FileFsyncdirer).Fsyncdir(ctx, flags)
}
