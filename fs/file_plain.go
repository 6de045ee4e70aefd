package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// plainHandle is an open file outside zones: go-fuse's loopback file, whose descriptor
// go-fuse hands to the kernel for passthrough, with the lock calls of lock.go.
type plainHandle struct {
	*gofs.LoopbackFile
	fd int    // the loopback file's descriptor, open until Release
	s  *state // held until Release
}

func (h *plainHandle) Getlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	return getLock(h.fd, lk, out)
}

func (h *plainHandle) Setlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return setLock(h.fd, lk, flags)
}

func (h *plainHandle) Setlkw(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return waitLock(ctx, h.fd, lk, flags)
}

// PassthroughFd is asked for by go-fuse just before it registers the descriptor for
// kernel passthrough, whose reads and writes are made with the credentials of that
// registration: on shared mounts the caller's (asOpener).
func (h *plainHandle) PassthroughFd() (int, bool) {
	if !passthroughAsCaller() {
		h.s.fsys.log.Printf("%s: served by the daemon: cannot act as the caller for passthrough", h.s.path())
		return -1, false
	}
	return h.LoopbackFile.PassthroughFd()
}

// Write and Allocate, which reach the daemon for files it serves itself (fallocate
// always), write as the caller on shared mounts.
func (h *plainHandle) Write(ctx context.Context, data []byte, off int64) (n uint32, errno syscall.Errno) {
	_ = h.s.fsys.asCaller(ctx, func() error { n, errno = h.LoopbackFile.Write(ctx, data, off); return nil })
	return n, errno
}

func (h *plainHandle) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	return gofs.ToErrno(h.s.fsys.asCaller(ctx, func() error { return errnoOr(h.LoopbackFile.Allocate(ctx, off, size, mode)) }))
}

func (h *plainHandle) Release(ctx context.Context) syscall.Errno {
	h.s.closing(h.fd)
	dropLocks(h.fd)
	errno := h.LoopbackFile.Release(ctx)
	h.s.release()
	return errno
}

// daemonFile is a plain file whose reads and writes come to the daemon (-o
// nopassthrough): a plain handle without the kernel passthrough. No open of such a
// mount is a passthrough one, so go-fuse never hands it a backing ID.
type daemonFile struct{ *plainHandle }

func (daemonFile) PassthroughFd() (int, bool) { return -1, false }

// plainFile is the handle of an open file outside zones, with its FOPEN flags. By
// default go-fuse hands its descriptor to the kernel (FUSE passthrough, where the
// kernel supports it), so its data never passes through the daemon.
//
// Where the daemon drops set-user-ID on write (rawFS), a set-ID file opened for
// writing must send its writes to the daemon, which sees them marked. That open is
// still a passthrough one, with FOPEN_DIRECT_IO on top: the kernel then sends its
// reads and writes to the daemon and maps it from the backing file. All opens of an
// inode must agree on passthrough: the kernel fails with EIO an open that would put an
// inode open for passthrough into cached mode, or the reverse, and go-fuse gives
// every open of a file the backing ID another open registered (a set-ID file kept
// open for reading would otherwise turn the write into a passthrough one).
func (n *node) plainFile(fd int, flags uint32) (gofs.FileHandle, uint32) {
	s := n.acquire()
	s.opened(fd)
	h := &plainHandle{gofs.NewLoopbackFile(fd).(*gofs.LoopbackFile), fd, s}
	if n.fsys.noPassthrough {
		return daemonFile{h}, 0
	}
	if n.fsys.killPriv && flags&syscall.O_ACCMODE != syscall.O_RDONLY && setID(fd) {
		return h, fuse.FOPEN_DIRECT_IO
	}
	return h, 0
}

// setID reports whether a write by a caller without CAP_FSETID would drop bits of the
// file's mode; when in doubt, that it would.
func setID(fd int) bool {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return true
	}
	return killBits(st.Mode) != 0
}

// plain returns the handle behind an open plain file.
func plain(fh gofs.FileHandle) (*plainHandle, bool) {
	switch h := fh.(type) {
	case *plainHandle:
		return h, true
	case daemonFile:
		return h.plainHandle, true
	}
	return nil, false
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
	var cnt int
	err := n.fsys.asCaller(ctx, func() (err error) {
		cnt, err = unix.CopyFileRange(in.fd, &a, o.fd, &b, int(length), int(flags))
		return err
	})
	return uint32(cnt), gofs.ToErrno(err)
}
