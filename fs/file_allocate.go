package fs

import (
	"context"
	"syscall"

	"github.com/ezfs/ezfs/crypto"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"
)

// Allocate serves fallocate(2), as the caller on shared mounts.
func (f *file) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	if errno := f.s.usable(); errno != 0 {
		return errno
	}
	return gofs.ToErrno(f.s.fsys.asCaller(ctx, func() error { return errnoOr(f.allocate(off, size, mode)) }))
}

// allocate is Allocate. Punching a hole and zeroing a range write zeros over the
// plaintext (whole blocks become backing holes); collapsing and inserting ranges would
// move blocks, whose numbers are sealed into them, and are refused.
func (f *file) allocate(off uint64, size uint64, mode uint32) syscall.Errno {
	start, end := int64(off), int64(off+size)
	keep := mode&unix.FALLOC_FL_KEEP_SIZE != 0
	switch mode &^ unix.FALLOC_FL_KEEP_SIZE {
	case 0:
		if keep {
			// Reserving space without changing the size needs no plaintext; reserve
			// the backing range that would hold it.
			f.s.mu.RLock()
			defer f.s.mu.RUnlock()
			return gofs.ToErrno(f.reserve(start, end))
		}
		f.s.mu.Lock()
		defer f.s.mu.Unlock()
		if err := f.s.resyncLocked(f.fd); err != nil {
			return f.s.errno(f.fd, err)
		}
		return f.s.errno(f.fd, f.s.extendLocked(f.fd, end))
	case unix.FALLOC_FL_PUNCH_HOLE, unix.FALLOC_FL_ZERO_RANGE:
		if mode&unix.FALLOC_FL_PUNCH_HOLE != 0 && !keep {
			return syscall.EOPNOTSUPP // as on every Linux file system
		}
		f.s.mu.Lock()
		defer f.s.mu.Unlock()
		if err := f.s.resyncLocked(f.fd); err != nil {
			return f.s.errno(f.fd, err)
		}
		if err := f.s.zeroLocked(f.fd, start, end); err != nil {
			return f.s.errno(f.fd, err)
		}
		if end <= f.s.size || mode&unix.FALLOC_FL_PUNCH_HOLE != 0 {
			return 0
		}
		if keep {
			return gofs.ToErrno(f.reserve(max(start, f.s.size), end))
		}
		return f.s.errno(f.fd, f.s.extendLocked(f.fd, end))
	}
	return syscall.EOPNOTSUPP
}

// reserve allocates the backing range of plaintext [start, end), size kept.
func (f *file) reserve(start, end int64) error {
	from := crypto.BlockOffset(start / crypto.BlockSize)
	to := crypto.BlockOffset((end + crypto.BlockSize - 1) / crypto.BlockSize)
	return syscall.Fallocate(f.fd, unix.FALLOC_FL_KEEP_SIZE, from, to-from)
}
