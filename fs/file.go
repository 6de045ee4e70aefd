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

// file is an open encrypted file: a backing descriptor and the node's content state,
// held until Release.
type file struct {
	s  *state
	fd int
}

// zoneFile is the handle of zone file s open as fd; it takes over the caller's hold on
// s.
func (s *state) zoneFile(fd int) *file {
	s.opened(fd)
	return &file{s: s, fd: fd}
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
	if errno := f.s.usable(); errno != 0 {
		return nil, errno
	}
	f.s.mu.RLock()
	defer f.s.mu.RUnlock()
	k, err := f.s.readLocked(f.fd, dest, off)
	if err != nil {
		return nil, f.s.errno(f.fd, err)
	}
	if z := f.s.zone.Load(); z != nil && f.s.fsys.met != nil {
		f.s.fsys.met.ZoneRead(z.IDString(), k)
	}
	return fuse.ReadResultData(dest[:k]), 0
}

func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if errno := f.s.usable(); errno != 0 {
		return 0, errno
	}
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if err := f.s.fsys.asCaller(ctx, func() error { return f.s.writeLocked(f.fd, data, off) }); err != nil {
		return 0, f.s.errno(f.fd, err)
	}
	if z := f.s.zone.Load(); z != nil && f.s.fsys.met != nil {
		f.s.fsys.met.ZoneWrite(z.IDString(), len(data))
	}
	return uint32(len(data)), 0
}

func (f *file) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	var st syscall.Stat_t
	if err := syscall.Fstat(f.fd, &st); err != nil {
		return gofs.ToErrno(err)
	}
	if errno := f.s.refreshSize(f.fd, st.Size); errno != 0 {
		return errno
	}
	out.FromStat(&st)
	f.s.fixSize(&out.Attr, st.Size)
	return 0
}

func (f *file) Release(ctx context.Context) syscall.Errno {
	f.s.closing(f.fd)
	err := syscall.Close(f.fd)
	f.s.release()
	return gofs.ToErrno(err)
}

func (f *file) Flush(ctx context.Context) syscall.Errno { return 0 }

func (f *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return gofs.ToErrno(syscall.Fsync(f.fd))
}

func (f *file) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	f.s.mu.RLock()
	size := uint64(f.s.size)
	f.s.mu.RUnlock()
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
