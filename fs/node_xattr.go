package fs

import (
	"context"
	"strings"
	"syscall"

	"github.com/ezfs/ezfs/backing"
	"github.com/ezfs/ezfs/zones"
)

// ezfs's own attributes (the EDEK, the zone marker) are invisible through the mount and
// cannot be set or removed through it; every other attribute passes through.
func hiddenXattr(attr string) bool { return strings.HasPrefix(attr, zones.XattrPrefix) }

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if hiddenXattr(attr) {
		return 0, syscall.ENODATA
	}
	var sz int
	ok, errno := n.readEntry(func(dirfd int, name string) (err error) {
		sz, err = backing.Getxattrat(dirfd, name, attr, dest)
		if err == syscall.ERANGE {
			return errHasData{err}
		}
		return err
	})
	if !ok {
		errno = n.withSelf(func(fd int) (err error) { sz, err = backing.Getxattr(fd, attr, dest); return err })
	}
	return uint32(sz), errno
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if hiddenXattr(attr) {
		return syscall.EPERM
	}
	return n.withSelf(func(fd int) error { return backing.Setxattr(fd, attr, data, int(flags)) })
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if hiddenXattr(attr) {
		return syscall.EPERM
	}
	return n.withSelf(func(fd int) error { return backing.Removexattr(fd, attr) })
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	var names []byte
	list := func(ls func(buf []byte) (int, error)) error {
		sz, err := ls(nil)
		if err != nil {
			return err
		}
		buf := make([]byte, sz)
		sz, err = ls(buf)
		names = buf[:max(sz, 0)]
		return err
	}
	ok, errno := n.atEntry(func(dirfd int, name string) error {
		return list(func(buf []byte) (int, error) { return backing.Listxattrat(dirfd, name, buf) })
	})
	if !ok {
		errno = n.withSelf(func(fd int) error {
			return list(func(buf []byte) (int, error) { return backing.Listxattr(fd, buf) })
		})
	}
	if errno != 0 {
		return 0, errno
	}
	var out []byte
	for _, a := range strings.Split(string(names), "\x00") {
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
