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
	ds, errno := gofs.NewLoopbackDirStreamFd(fd) // closes fd from here on
	if errno != 0 {
		return nil, errno
	}
	if n.fsys.hasHidden && st.Dev == n.fsys.hidden[0] {
		return &hidingDir{inner: ds, ino: n.fsys.hidden[1]}, 0
	}
	return ds, 0
}

// hidingDir is a directory stream that leaves out the entry of one inode.
type hidingDir struct {
	inner gofs.DirStream
	ino   uint64
}

func (d *hidingDir) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	for {
		e, errno := d.inner.(gofs.FileReaddirenter).Readdirent(ctx)
		if e == nil || errno != 0 || e.Ino != d.ino || e.Name == "." || e.Name == ".." {
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
