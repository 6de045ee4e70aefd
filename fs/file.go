package fs

import (
	"context"
	"errors"
	"syscall"

	"github.com/ezfs/ezfs/crypto"
	"github.com/ezfs/ezfs/keystore"
	"github.com/ezfs/ezfs/zones"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// openFlags turns the flags of an open on the mount into flags for the backing file.
// An encrypted file is always opened for reading too (partial blocks are
// read-modify-write); O_APPEND is dropped because the kernel passes the offset;
// O_DIRECT is dropped because block sealing is not aligned to the device.
func openFlags(flags uint32, encrypted bool) int {
	f := int(flags) &^ (syscall.O_APPEND | fuse.FMODE_EXEC | syscall.O_CREAT | syscall.O_EXCL)
	if encrypted {
		f &^= syscall.O_DIRECT | syscall.O_TRUNC
		if f&syscall.O_ACCMODE != syscall.O_RDONLY {
			f = f&^syscall.O_ACCMODE | syscall.O_RDWR
		}
	}
	return f | syscall.O_CLOEXEC | syscall.O_NOFOLLOW
}

// openPath opens a backing path without following symlinks in any component, so a
// name swapped for a symlink in a race cannot lead outside the backing dir.
func openPath(p string, flags int, mode uint32) (int, error) {
	fd, err := unix.Openat2(unix.AT_FDCWD, p, &unix.OpenHow{
		Flags: uint64(flags), Mode: uint64(mode & 0o7777), Resolve: unix.RESOLVE_NO_SYMLINKS,
	})
	if errors.Is(err, unix.ENOSYS) {
		return unix.Open(p, flags, mode)
	}
	return fd, err
}

func (n *node) openBacking(flags int) (int, syscall.Errno) {
	var fd int
	var err error
	if n.lost() {
		// open(/proc/self/fd/N) opens the file anew, as it does for the caller.
		err = n.viaOpenFile(func(ofd int) (err error) {
			fd, err = syscall.Open(procFD(ofd), flags&^syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
			return err
		})
	} else {
		fd, err = openPath(n.path(), flags|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, 0)
	}
	if err != nil {
		return -1, gofs.ToErrno(err)
	}
	if n.encrypted() {
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err != nil {
			syscall.Close(fd)
			return -1, gofs.ToErrno(err)
		}
		if n.fsys.stableAttr(&st).Ino != n.StableAttr().Ino {
			// The name now points at another file; our cached key is not its key.
			syscall.Close(fd)
			return -1, syscall.ENOENT
		}
	}
	return fd, 0
}

func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if !n.encrypted() {
		fd, errno := n.openBacking(openFlags(flags, false))
		if errno != 0 {
			return nil, 0, errno
		}
		fh, fl := n.plainFile(fd, flags)
		return fh, fl, 0
	}
	fd, errno := n.openBacking(openFlags(flags, true))
	if errno != 0 {
		return nil, 0, errno
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.loadLocked(ctx, fd); err != nil {
		errno := n.errno(fd, err)
		syscall.Close(fd)
		return nil, 0, errno
	}
	if flags&syscall.O_TRUNC != 0 {
		if err := n.truncateLocked(fd, 0); err != nil {
			errno := n.errno(fd, err)
			syscall.Close(fd)
			return nil, 0, errno
		}
	}
	return n.zoneFile(fd), zoneOpenFlags, 0
}

// loadLocked builds the file's cipher from its EDEK and learns its size, once per node.
func (n *node) loadLocked(ctx context.Context, fd int) error {
	if n.cc != nil && n.sizeKnown {
		return nil
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return err
	}
	if n.cc == nil {
		buf := make([]byte, 512)
		sz, err := unix.Fgetxattr(fd, zones.XattrEDEK, buf)
		if errors.Is(err, unix.ENODATA) {
			return errNoEDEK
		}
		if err != nil {
			return err
		}
		dek, e, err := n.fsys.keys.OpenFileKey(keyContext(ctx), n.zone.Load(), buf[:sz])
		if err != nil {
			return err
		}
		cc, err := crypto.NewContentCipher(dek, e.FileID)
		crypto.Zero(dek)
		if err != nil {
			return err
		}
		if st.Size > 0 {
			h := make([]byte, crypto.HeaderSize)
			if _, err := syscall.Pread(fd, h, 0); err != nil {
				return err
			}
			if err := crypto.CheckHeader(h, e.FileID); err != nil {
				return err
			}
		}
		n.cc = cc
	}
	return n.learnSizeLocked(fd, st.Size)
}

// keyContext is the context a request's key unwrap runs under: the request's, except
// that an interrupt does not cancel it. The kernel interrupts a request whenever its
// caller catches a signal, even one it goes on from (Go's runtime preempts its threads
// with SIGURG), and an unwrap given up there would turn an open into EIO. A caller
// killed by its signal does not wait for the answer; the unwrap stays bounded by the
// provider's own timeouts, and the key it brings is cached for the next request.
func keyContext(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }

var errNoEDEK = errors.New("file in a zone has no EDEK (user.ezfs.edek)")

// errno maps an error of the encrypted data path to an errno and logs why; the reason
// of an EIO must be findable in the daemon's log.
func (n *node) errno(fd int, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var en syscall.Errno
	switch {
	case errors.As(err, &en):
		return en
	case errors.Is(err, keystore.ErrPermission):
		n.fsys.log.Printf("%s: %v", n.path(), err)
		return syscall.EACCES
	case errors.Is(err, keystore.ErrKeyNotFound):
		n.fsys.log.Printf("%s: %v", n.path(), err)
		return syscall.ENOKEY
	}
	n.fsys.log.Printf("EIO on %s: %v", n.path(), err)
	return syscall.EIO
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if n.hides(name) {
		return nil, nil, 0, syscall.EPERM
	}
	n.fsys.zoneMu.RLock()
	defer n.fsys.zoneMu.RUnlock()
	p := n.child(name)
	z := n.zone.Load()
	if z == nil {
		fd, err := openPath(p, openFlags(flags, false)|syscall.O_CREAT, mode)
		if err != nil {
			return nil, nil, 0, gofs.ToErrno(err)
		}
		ch, errno := n.created(ctx, name, fd, out)
		if errno != 0 {
			syscall.Close(fd)
			return nil, nil, 0, errno
		}
		fh, fl := ch.Operations().(*node).plainFile(fd, flags)
		return ch, fh, fl, 0
	}
	fd, err := openPath(p, openFlags(flags, true)|syscall.O_CREAT|syscall.O_EXCL, mode)
	if errors.Is(err, syscall.EEXIST) && flags&syscall.O_EXCL == 0 {
		// Lost a race with another creator: open the file that is there.
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return nil, nil, 0, gofs.ToErrno(err)
		}
		ch := n.newChild(ctx, name, &st, &out.Attr)
		fh, fl, errno := ch.Operations().(*node).Open(ctx, flags)
		return ch, fh, fl, errno
	}
	if err != nil {
		return nil, nil, 0, gofs.ToErrno(err)
	}
	cc, errno := n.sealNew(ctx, fd, z)
	if errno != 0 {
		syscall.Close(fd)
		syscall.Unlink(p)
		return nil, nil, 0, errno
	}
	ch, errno := n.created(ctx, name, fd, out)
	if errno != 0 {
		syscall.Close(fd)
		return nil, nil, 0, errno
	}
	c := ch.Operations().(*node)
	c.mu.Lock()
	c.cc, c.size, c.sizeKnown = cc, 0, true
	c.mu.Unlock()
	return ch, c.zoneFile(fd), zoneOpenFlags, 0
}

// sealNew gives a new, empty backing file its data key: the EDEK goes into the xattr
// before the file is handed out, so no byte is ever written without one.
func (n *node) sealNew(ctx context.Context, fd int, z *zones.Zone) (*crypto.ContentCipher, syscall.Errno) {
	dek, rec, id, err := n.fsys.keys.NewFileKey(keyContext(ctx), z)
	if err != nil {
		return nil, n.errno(fd, err)
	}
	defer crypto.Zero(dek)
	if err := unix.Fsetxattr(fd, zones.XattrEDEK, rec, 0); err != nil {
		n.fsys.log.Printf("store EDEK in %s: %v", n.path(), err)
		return nil, gofs.ToErrno(err)
	}
	cc, err := crypto.NewContentCipher(dek, id)
	if err != nil {
		return nil, n.errno(fd, err)
	}
	return cc, 0
}

func (n *node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	z := n.zone.Load()
	fd, err := syscall.Open(n.path(), openFlags(flags, z != nil)&^syscall.O_NOFOLLOW|unix.O_TMPFILE, mode)
	if err != nil {
		return nil, nil, 0, gofs.ToErrno(err)
	}
	var cc *crypto.ContentCipher
	if z != nil {
		var errno syscall.Errno
		if cc, errno = n.sealNew(ctx, fd, z); errno != 0 {
			syscall.Close(fd)
			return nil, nil, 0, errno
		}
	}
	n.preserveOwner(ctx, fd, "")
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		syscall.Close(fd)
		return nil, nil, 0, gofs.ToErrno(err)
	}
	ch := n.newChild(ctx, "", &st, &out.Attr)
	if z == nil {
		fh, fl := ch.Operations().(*node).plainFile(fd, flags)
		return ch, fh, fl, 0
	}
	c := ch.Operations().(*node)
	c.mu.Lock()
	c.cc, c.size, c.sizeKnown = cc, 0, true
	c.mu.Unlock()
	return ch, c.zoneFile(fd), zoneOpenFlags, 0
}

// plainHandle is an open file outside zones: go-fuse's loopback file, whose descriptor
// go-fuse hands to the kernel for passthrough, with the lock calls of lock.go.
type plainHandle struct {
	*gofs.LoopbackFile
	fd int // the loopback file's descriptor, open until Release
	n  *node
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

func (h *plainHandle) Release(ctx context.Context) syscall.Errno {
	h.n.closing(h.fd)
	dropLocks(h.fd)
	return h.LoopbackFile.Release(ctx)
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
	n.opened(fd)
	h := &plainHandle{gofs.NewLoopbackFile(fd).(*gofs.LoopbackFile), fd, n}
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
	f.n.mu.RLock()
	defer f.n.mu.RUnlock()
	k, err := f.n.readLocked(f.fd, dest, off)
	if err != nil {
		return nil, f.n.errno(f.fd, err)
	}
	return fuse.ReadResultData(dest[:k]), 0
}

func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	f.n.mu.Lock()
	defer f.n.mu.Unlock()
	if err := f.n.writeLocked(f.fd, data, off); err != nil {
		return 0, f.n.errno(f.fd, err)
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

// Allocate serves fallocate(2). Punching a hole and zeroing a range write zeros over
// the plaintext (whole blocks become backing holes); collapsing and inserting ranges
// would move blocks, whose numbers are sealed into them, and are refused.
func (f *file) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	start, end := int64(off), int64(off+size)
	keep := mode&unix.FALLOC_FL_KEEP_SIZE != 0
	switch mode &^ unix.FALLOC_FL_KEEP_SIZE {
	case 0:
		if keep {
			// Reserving space without changing the size needs no plaintext; reserve
			// the backing range that would hold it.
			f.n.mu.RLock()
			defer f.n.mu.RUnlock()
			return gofs.ToErrno(f.reserve(start, end))
		}
		f.n.mu.Lock()
		defer f.n.mu.Unlock()
		return f.n.errno(f.fd, f.n.extendLocked(f.fd, end))
	case unix.FALLOC_FL_PUNCH_HOLE, unix.FALLOC_FL_ZERO_RANGE:
		if mode&unix.FALLOC_FL_PUNCH_HOLE != 0 && !keep {
			return syscall.EOPNOTSUPP // as on every Linux file system
		}
		f.n.mu.Lock()
		defer f.n.mu.Unlock()
		if err := f.n.zeroLocked(f.fd, start, end); err != nil {
			return f.n.errno(f.fd, err)
		}
		if end <= f.n.size || mode&unix.FALLOC_FL_PUNCH_HOLE != 0 {
			return 0
		}
		if keep {
			return gofs.ToErrno(f.reserve(max(start, f.n.size), end))
		}
		return f.n.errno(f.fd, f.n.extendLocked(f.fd, end))
	}
	return syscall.EOPNOTSUPP
}

// reserve allocates the backing range of plaintext [start, end), size kept.
func (f *file) reserve(start, end int64) error {
	from := crypto.BlockOffset(start / crypto.BlockSize)
	to := crypto.BlockOffset((end + crypto.BlockSize - 1) / crypto.BlockSize)
	return syscall.Fallocate(f.fd, unix.FALLOC_FL_KEEP_SIZE, from, to-from)
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
