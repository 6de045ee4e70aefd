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
)

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	d, errno := n.dir()
	if errno != 0 {
		return nil, errno
	}
	defer d.release()
	var st unix.Stat_t
	if err := backing.Lstat(d.fd, name, &st); err != nil {
		return nil, gofs.ToErrno(err)
	}
	if n.fsys.isHidden(&st) {
		return nil, syscall.ENOENT
	}
	fd := -1
	if st.Mode&unix.S_IFMT == unix.S_IFDIR && n.zone.Load() == nil {
		// A directory outside zones may be a zone root: its marker and its identity
		// are read through one descriptor, so both are of the same directory.
		var err error
		if fd, err = backing.OpenIn(d.fd, name, unix.O_RDONLY|unix.O_DIRECTORY, 0); err != nil {
			return nil, gofs.ToErrno(err)
		}
		defer unix.Close(fd)
		if err := backing.Stat(fd, &st); err != nil {
			return nil, gofs.ToErrno(err)
		}
	}
	return n.newChild(ctx, name, fd, &st, &out.Attr), 0
}
