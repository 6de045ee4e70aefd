package fs

import (
	"context"
	"syscall"
	"unsafe"

	"github.com/ezfs/ezfs/backing"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

func (n *node) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if fh, ok := f.(*file); ok {
		return fh.Getattr(ctx, out)
	}
	if lf, ok := f.(gofs.FileGetattrer); ok && f != nil {
		return lf.Getattr(ctx, out)
	}
	var st unix.Stat_t
	if ok, errno := n.statEntry(&st); !ok {
		fd, errno := n.self(&st)
		if errno != 0 {
			return errno
		}
		unix.Close(fd)
	} else if errno != 0 {
		return errno
	}
	n.fillAttr(&st, out)
	return 0
}

// fillAttr sets out from the backing object's attributes st (a zone file's size is its
// plaintext's).
func (n *node) fillAttr(st *unix.Stat_t, out *fuse.AttrOut) {
	out.FromStat(sysStat(st))
	n.fixSize(&out.Attr, st.Size)
}

func (n *node) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if f == nil && n.lost() {
		// fchmod, fchown and futimens of a file unlinked while open come without a
		// handle (so do the kernel's own drops of set-ID bits): they are made through a
		// new open of the file, as if through a handle.
		var errno syscall.Errno
		var done func()
		if f, done, errno = n.reopenHandle(ctx, in); errno != 0 {
			return errno
		}
		defer done()
	}
	if h, ok := plain(f); ok {
		if errno := h.Setattr(ctx, in, out); errno != 0 {
			return errno
		}
		out.SetTimeout(n.fsys.attrTimeout())
		return 0
	}
	// A zone file's handle has its backing descriptor; without a handle the node's
	// own object is reached through an O_PATH descriptor.
	fd := -1
	if fh, ok := f.(*file); ok {
		fd = fh.fd
	} else if errno, done := n.setattrOpen(ctx, in, out); done {
		return errno
	} else {
		var st unix.Stat_t
		var errno syscall.Errno
		if fd, errno = n.self(&st); errno != 0 {
			return errno
		}
		defer unix.Close(fd)
	}
	if errno := n.setattr(ctx, f, fd, in); errno != 0 {
		return errno
	}
	if errno := n.attrAfter(ctx, f, fd, out); errno != 0 {
		return errno
	}
	// go-fuse leaves the reply of SETATTR uncached; without a timeout the kernel asks
	// again (GETATTR) before the next chown or utimens of the same file.
	out.SetTimeout(n.fsys.attrTimeout())
	return 0
}

// setattrOpen makes a SETATTR that came without a handle (utimensat or fchmod of an
// open descriptor, touch's) through the backing descriptor of one of the node's open
// files, the node's object by construction: no lookup of its name, no O_PATH open and
// check. A size is left to Setattr (a truncate takes the content lock and wants a
// descriptor open for writing). done is false when no file of the node is open.
func (n *node) setattrOpen(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) (errno syscall.Errno, done bool) {
	if _, ok := in.GetSize(); ok {
		return 0, false
	}
	var st unix.Stat_t
	// Under the state's fdMu, which must not be held while its mu is taken: only
	// system calls here, the size is fixed afterwards.
	err := n.viaOpenFile(func(fd int) error {
		if errno = n.setattr(ctx, nil, fd, in); errno == 0 {
			errno = gofs.ToErrno(backing.Stat(fd, &st))
		}
		return nil
	})
	if err != nil {
		return 0, false
	}
	if errno != 0 {
		return errno, true
	}
	n.fillAttr(&st, out)
	out.SetTimeout(n.fsys.attrTimeout())
	return 0, true
}

// attrAfter reads the attributes a SETATTR replies with: through the handle, or
// through fd, the node's own object, which self opened and checked.
func (n *node) attrAfter(ctx context.Context, f gofs.FileHandle, fd int, out *fuse.AttrOut) syscall.Errno {
	if fh, ok := f.(*file); ok {
		return fh.Getattr(ctx, out)
	}
	var st unix.Stat_t
	if err := backing.Stat(fd, &st); err != nil {
		return gofs.ToErrno(err)
	}
	n.fillAttr(&st, out)
	return 0
}

// setattr applies in to the object open as fd: mode, owner, size, then times, so an
// explicit mtime is not clobbered by the truncate.
func (n *node) setattr(ctx context.Context, f gofs.FileHandle, fd int, in *fuse.SetAttrIn) syscall.Errno {
	if m, ok := in.GetMode(); ok {
		if err := backing.Chmod(fd, m); err != nil {
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
		if err := backing.Chown(fd, su, sg); err != nil {
			return gofs.ToErrno(err)
		}
	}
	if sz, ok := in.GetSize(); ok {
		if errno := n.truncate(ctx, f, fd, int64(sz)); errno != 0 {
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
		if err := backing.Utimens(fd, ts); err != nil {
			return gofs.ToErrno(err)
		}
	}
	return 0
}

// reopenHandle opens a handle on a file that has lost its names, for a SETATTR that
// came without one; done releases it.
func (n *node) reopenHandle(ctx context.Context, in *fuse.SetAttrIn) (gofs.FileHandle, func(), syscall.Errno) {
	flags := syscall.O_RDONLY
	if _, ok := in.GetSize(); ok {
		flags = syscall.O_RDWR
	}
	fd, errno := n.openBacking(flags)
	if errno != 0 {
		return nil, nil, errno
	}
	s := n.acquire()
	if n.encrypted() {
		return &file{s: s, fd: fd}, func() { syscall.Close(fd); s.release() }, 0
	}
	lf := gofs.NewLoopbackFile(fd).(*gofs.LoopbackFile) // closes fd from here on
	return &plainHandle{LoopbackFile: lf, fd: fd, s: s}, func() { lf.Release(ctx); s.release() }, 0
}

// truncate sets the size of the object open as fd (an O_PATH descriptor when there is
// no handle); for encrypted files under the content lock.
func (n *node) truncate(ctx context.Context, f gofs.FileHandle, fd int, size int64) syscall.Errno {
	if !n.encrypted() {
		return gofs.ToErrno(backing.Truncate(fd, size))
	}
	if errno := n.usable(); errno != 0 {
		return errno
	}
	if fh, ok := f.(*file); ok {
		return fh.s.truncate(ctx, fh.fd, size)
	}
	wfd, err := backing.Reopen(fd, syscall.O_RDWR)
	if err != nil {
		return gofs.ToErrno(err)
	}
	defer syscall.Close(wfd)
	s := n.acquire()
	defer s.release()
	return s.truncate(ctx, wfd, size)
}

// truncate sets the size of the zone file open as fd, loaded first if need be (a file
// truncated by its name is not open, and the state may be new).
func (s *state) truncate(ctx context.Context, fd int, size int64) syscall.Errno {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.loadLocked(ctx, fd); err != nil {
		return s.errno(fd, err)
	}
	if err := s.resyncLocked(fd); err != nil {
		return s.errno(fd, err)
	}
	return s.errno(fd, s.fsys.asCaller(ctx, func() error { return s.truncateLocked(fd, size) }))
}

// Access answers access(2) when the kernel does not check permissions itself (no
// default_permissions, so the caller is root): as the daemon, which is root too.
func (n *node) Access(ctx context.Context, mask uint32) syscall.Errno {
	return n.withSelf(func(fd int) error { return backing.Access(fd, mask) })
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	var s unix.Statfs_t
	if errno := n.withSelf(func(fd int) error { return backing.Statfs(fd, &s) }); errno != 0 {
		return errno
	}
	out.FromStatfsT((*syscall.Statfs_t)(unsafe.Pointer(&s)))
	return 0
}
