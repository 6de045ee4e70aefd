package fs

import (
	"context"
	"errors"
	"math"
	"syscall"

	"github.com/ezfs/ezfs/backing"
	"github.com/ezfs/ezfs/crypto"
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

// openBacking opens the node's backing file with flags: beneath the backing root by
// its path, checked to be the node's inode, or, once it has lost its names, anew
// through one of its open files.
func (n *node) openBacking(flags int) (int, syscall.Errno) {
	var fd int
	var err error
	if n.lost() {
		err = n.viaOpenFile(func(ofd int) (err error) { fd, err = backing.Reopen(ofd, flags); return err })
	} else {
		fd, err = n.fsys.root.Open(n.rel(), flags, 0)
	}
	if err != nil {
		return -1, gofs.ToErrno(err)
	}
	var st unix.Stat_t
	if errno := n.check(fd, &st); errno != 0 {
		// The name now leads to another file: neither the kernel's permission check
		// nor, in a zone, our cached key is about it.
		syscall.Close(fd)
		return -1, errno
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
	if errno := n.usable(); errno != 0 {
		return nil, 0, errno
	}
	fd, errno := n.openBacking(openFlags(flags, true))
	if errno != 0 {
		return nil, 0, errno
	}
	s := n.acquire()
	fh, errno := s.openLoaded(ctx, fd, flags)
	if errno != 0 {
		syscall.Close(fd)
		s.release()
		return nil, 0, errno
	}
	return fh, zoneOpenFlags, 0
}

// openLoaded makes the handle of zone file s open as fd, loaded (and truncated for
// O_TRUNC) first.
func (s *state) openLoaded(ctx context.Context, fd int, flags uint32) (*file, syscall.Errno) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.revalidateLocked(fd); err != nil {
		return nil, s.errno(fd, err)
	}
	if err := s.loadLocked(ctx, fd); err != nil {
		return nil, s.errno(fd, err)
	}
	if flags&syscall.O_TRUNC != 0 {
		if err := s.truncateLocked(fd, 0); err != nil {
			return nil, s.errno(fd, err)
		}
	}
	return s.zoneFile(fd), 0
}

// loadLocked builds the file's cipher from its EDEK, once per state, and learns its
// size, once per state too: a state kept for a torn tail (see state) knows it.
func (s *state) loadLocked(ctx context.Context, fd int) error {
	if s.cc != nil && s.sizeKnown {
		return nil
	}
	if s.cc == nil {
		rec, err := zones.ReadEDEK(fd)
		if err != nil {
			return err
		}
		dek, e, err := s.fsys.keys.OpenFileKey(keyContext(ctx), s.zone.Load(), rec)
		if err != nil {
			return err
		}
		cc, err := crypto.NewContentCipher(dek, e.FileID)
		crypto.Zero(dek)
		if err != nil {
			return err
		}
		s.cc, s.keyVersion = cc, e.KeyVersion
		if s.sizeKnown && s.sizeOf != e.FileID {
			// A size kept (for a torn tail) is of the file it was learnt from; the
			// inode now holds another one (replaced behind the mount's back).
			s.sizeKnown, s.torn = false, false
		}
	}
	if s.sizeKnown {
		return nil
	}
	return s.learnLocked(fd)
}

// learnLocked learns the size of the file open as fd, whose cipher s.cc is.
func (s *state) learnLocked(fd int) error {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return err
	}
	buf := getBuf(headLen(st.Size))
	defer putBuf(buf)
	return withoutAtime(fd, func() error {
		head, err := readHead(fd, *buf, s.cc.FileID())
		if err != nil {
			return err
		}
		return s.learnSizeLocked(fd, st.Size, head)
	})
}

// withoutAtime calls fn with the open file fd marked O_NOATIME: the reads an open makes
// to load a file are not an access of it (a plain file's open reads nothing), only the
// reads through the mount are. Where the flag is refused, fn runs all the same.
func withoutAtime(fd int, fn func() error) error {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_NOATIME != 0 {
		return fn()
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl|unix.O_NOATIME); err != nil {
		return fn()
	}
	defer unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl)
	return fn()
}

// readHead reads the start of a zone file into head and checks its header against the
// file ID of its EDEK: the header and, for a file of one block, the last block, which
// loading needs too, in one read (head is as long as both, or as the file). A file
// shorter than the header is judged by crypto.CheckTornHeader (no head: it holds no
// byte).
func readHead(fd int, head []byte, id crypto.FileID) ([]byte, error) {
	if len(head) == 0 {
		return nil, nil
	}
	k, err := syscall.Pread(fd, head, 0)
	if err != nil {
		return nil, err
	}
	head = head[:k]
	if len(head) < crypto.HeaderSize {
		// A strict prefix of its header is a first write torn by a crash: the file
		// opens empty, torn (cut at the next change); anything else answers EIO.
		return nil, crypto.CheckTornHeader(head, id)
	}
	return head, crypto.CheckHeader(head[:crypto.HeaderSize], id)
}

// headLen is how much of a zone file of size backing bytes readHead reads.
func headLen(size int64) int { return int(min(size, crypto.HeaderSize+crypto.CipherBlockLen)) }

// keyContext is the context a request's key unwrap runs under: the request's, except
// that an interrupt does not cancel it. The kernel interrupts a request whenever its
// caller catches a signal, even one it goes on from (Go's runtime preempts its threads
// with SIGURG), and an unwrap given up there would turn an open into EIO. A caller
// killed by its signal does not wait for the answer; the unwrap stays bounded by the
// provider's own timeouts, and the key it brings is cached for the next request.
func keyContext(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	n.fsys.zoneMu.RLock()
	defer n.fsys.zoneMu.RUnlock()
	d, errno := n.createIn()
	if errno != 0 {
		return nil, nil, 0, errno
	}
	defer d.release()
	z := n.zone.Load()
	if z == nil {
		return n.createPlain(ctx, d.fd, name, flags, mode, out)
	}
	fd, err := n.createFile(ctx, d.fd, name, openFlags(flags, true)|syscall.O_EXCL, mode)
	if errors.Is(err, syscall.EEXIST) && flags&syscall.O_EXCL == 0 {
		// Lost a race with another creator: open the file that is there.
		var st unix.Stat_t
		if err := backing.Lstat(d.fd, name, &st); err != nil {
			return nil, nil, 0, gofs.ToErrno(err)
		}
		ch := n.newChild(ctx, name, -1, &st, &out.Attr)
		fh, fl, errno := ch.Operations().(*node).Open(ctx, flags)
		return ch, fh, fl, errno
	}
	if err != nil {
		return nil, nil, 0, gofs.ToErrno(err)
	}
	cc, errno := n.sealNew(ctx, fd, z)
	if errno != 0 {
		n.removeCreated(d.fd, name, fd)
		syscall.Close(fd)
		return nil, nil, 0, errno
	}
	ch, errno := n.created(ctx, d.fd, name, fd, out)
	if errno != 0 {
		syscall.Close(fd)
		return nil, nil, 0, errno
	}
	return ch, ch.Operations().(*node).newZoneFile(fd, cc), zoneOpenFlags, 0
}

// createFile creates (or, without O_EXCL, opens) entry name as the caller.
func (n *node) createFile(ctx context.Context, dirfd int, name string, flags int, mode uint32) (fd int, err error) {
	err = n.fsys.asCaller(ctx, func() (err error) {
		fd, err = backing.OpenIn(dirfd, name, flags|syscall.O_CREAT, mode)
		return err
	})
	return fd, err
}

func (n *node) createPlain(ctx context.Context, dirfd int, name string, flags, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	fd, err := n.createFile(ctx, dirfd, name, openFlags(flags, false)|int(flags&syscall.O_EXCL), mode)
	if err != nil {
		return nil, nil, 0, gofs.ToErrno(err)
	}
	ch, errno := n.created(ctx, dirfd, name, fd, out)
	if errno != 0 {
		syscall.Close(fd)
		return nil, nil, 0, errno
	}
	fh, fl := ch.Operations().(*node).plainFile(fd, flags)
	return ch, fh, fl, 0
}

// removeCreated takes back a create that failed after the file was made: the name is
// removed only if it still is the file open as fd.
func (n *node) removeCreated(dirfd int, name string, fd int) {
	var a, b unix.Stat_t
	if backing.Stat(fd, &a) == nil && backing.Lstat(dirfd, name, &b) == nil && a.Dev == b.Dev && a.Ino == b.Ino {
		_ = backing.Unlink(dirfd, name)
	}
}

// newZoneFile hands out the first open of a new zone file, whose cipher is sd's.
func (n *node) newZoneFile(fd int, sd sealed) *file {
	s := n.acquire()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cc, s.keyVersion, s.size, s.sizeKnown, s.holeFrom = sd.cc, sd.version, 0, true, math.MaxInt64
	s.sizeOf, s.torn = sd.cc.FileID(), false
	return s.zoneFile(fd)
}

// sealed is what sealNew made: the new file's cipher and the zone key version of its
// EDEK.
type sealed struct {
	cc      *crypto.ContentCipher
	version uint32
}

// sealNew gives a new, empty backing file its data key: the EDEK goes into the xattr
// before the file is handed out, so no byte is ever written without one.
func (n *node) sealNew(ctx context.Context, fd int, z *zones.Zone) (sealed, syscall.Errno) {
	dek, rec, id, err := n.fsys.keys.NewFileKey(keyContext(ctx), z)
	if err != nil {
		return sealed{}, n.errno(fd, err)
	}
	defer crypto.Zero(dek)
	e, err := crypto.ParseEDEK(rec)
	if err != nil {
		return sealed{}, n.errno(fd, err)
	}
	if err := zones.WriteEDEK(fd, rec, false); err != nil {
		n.fsys.log.Printf("store EDEK in %s: %v", n.path(), err)
		return sealed{}, gofs.ToErrno(err)
	}
	cc, err := crypto.NewContentCipher(dek, id)
	if err != nil {
		return sealed{}, n.errno(fd, err)
	}
	return sealed{cc, e.KeyVersion}, 0
}

func (n *node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	d, errno := n.createIn()
	if errno != 0 {
		return nil, nil, 0, errno
	}
	defer d.release()
	z := n.zone.Load()
	var fd int
	err := n.fsys.asCaller(ctx, func() (err error) {
		fd, err = backing.OpenIn(d.fd, ".", openFlags(flags, z != nil)&^syscall.O_NOFOLLOW|unix.O_TMPFILE, mode)
		return err
	})
	if err != nil {
		return nil, nil, 0, gofs.ToErrno(err)
	}
	var cc sealed
	if z != nil {
		if cc, errno = n.sealNew(ctx, fd, z); errno != 0 {
			syscall.Close(fd)
			return nil, nil, 0, errno
		}
	}
	n.preserveOwner(ctx, d.fd, "", fd)
	var st unix.Stat_t
	if err := backing.Stat(fd, &st); err != nil {
		syscall.Close(fd)
		return nil, nil, 0, gofs.ToErrno(err)
	}
	ch := n.newChild(ctx, "", -1, &st, &out.Attr)
	c := ch.Operations().(*node)
	if z == nil {
		fh, fl := c.plainFile(fd, flags)
		return ch, fh, fl, 0
	}
	return ch, c.newZoneFile(fd, cc), zoneOpenFlags, 0
}
