package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// zoneOpenFlags go with every open zone file. FOPEN_NOFLUSH: close(2) of a zone file
// has nothing for the daemon to do (every WRITE is sealed and written before it is
// answered, and locks are open file description locks, released with the file), so
// the kernel skips the FLUSH round trip, one in five of creating and closing a file.
// Pages dirtied through a shared mapping are still written when it is unmapped
// (the kernel writes them back as a mapping closes) and by msync and fsync. Plain
// files keep FLUSH: their loopback Flush closes a duplicate of the backing
// descriptor, which reports deferred write errors on backing file systems such as NFS.
const zoneOpenFlags = fuse.FOPEN_NOFLUSH

// file is an open encrypted file: a backing descriptor and the node's content state.
type file struct {
	n  *node
	fd int
}

// zoneFile is the handle of zone file n open as fd.
func (n *node) zoneFile(fd int) *file {
	n.opened(fd)
	return &file{n: n, fd: fd}
}

var (
	_ gofs.FileReader    = (*file)(nil)
	_ gofs.FileWriter    = (*file)(nil)
	_ gofs.FileGetattrer = (*file)(nil)
	_ gofs.FileReleaser  = (*file)(nil)
	_ gofs.FileFsyncer   = (*file)(nil)
	_ gofs.FileFlusher   = (*file)(nil)
	_ gofs.FileLseeker   = (*file)(nil)
	_ gofs.FileAllocater = (*file)(nil)
	_ gofs.FileGetlker   = (*file)(nil)
	_ gofs.FileSetlker   = (*file)(nil)
	_ gofs.FileSetlkwer  = (*file)(nil)
)

func (f *file) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if errno := f.n.usable(); errno != 0 {
		return nil, errno
	}
	f.n.mu.RLock()
	defer f.n.mu.RUnlock()
	k, err := f.n.readLocked(f.fd, dest, off)
	if err != nil {
		return nil, f.n.errno(f.fd, err)
	}
	if z := f.n.zone.Load(); z != nil && f.n.fsys.met != nil {
		f.n.fsys.met.ZoneRead(z.IDString(), k)
	}
	return fuse.ReadResultData(dest[:k]), 0
}

func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if errno := f.n.usable(); errno != 0 {
		return 0, errno
	}
	f.n.mu.Lock()
	defer f.n.mu.Unlock()
	if err := f.n.fsys.asCaller(ctx, func() error { return f.n.writeLocked(f.fd, data, off) }); err != nil {
		return 0, f.n.errno(f.fd, err)
	}
	if z := f.n.zone.Load(); z != nil && f.n.fsys.met != nil {
		f.n.fsys.met.ZoneWrite(z.IDString(), len(data))
	}
	return uint32(len(data)), 0
}

func (f *file) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	var st syscall.Stat_t
	if err := syscall.Fstat(f.fd, &st); err != nil {
		return gofs.ToErrno(err)
	}
	out.FromStat(&st)
	f.n.fixSize(&out.Attr, st.Size)
	return 0
}

func (f *file) Release(ctx context.Context) syscall.Errno {
	f.n.closing(f.fd)
	return gofs.ToErrno(syscall.Close(f.fd))
}

func (f *file) Flush(ctx context.Context) syscall.Errno { return 0 }

func (f *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return gofs.ToErrno(syscall.Fsync(f.fd))
}

func (f *file) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	f.n.mu.RLock()
	size := uint64(f.n.size)
	f.n.mu.RUnlock()
	// Holes inside a sealed file are not tracked: the whole file is data.
	switch whence {
	case unix.SEEK_DATA:
		if off >= size {
			return 0, syscall.ENXIO
		}
		return off, 0
	case unix.SEEK_HOLE:
		if off > size {
			return 0, syscall.ENXIO
		}
		return size, 0
	}
	return 0, syscall.EINVAL
}

// File locks are held on the backing descriptor as open-file-description locks, as in
// go-fuse's loopback: a lock belongs to the open file, so two opens conflict even in
// one process. Ranges are plaintext offsets; only users of the mount see them.
func (f *file) Getlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	return getLock(f.fd, lk, out)
}

func (f *file) Setlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return setLock(f.fd, lk, flags)
}

func (f *file) Setlkw(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return waitLock(ctx, f.fd, lk, flags)
}
