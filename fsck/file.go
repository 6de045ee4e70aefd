package fsck

import (
	"errors"
	"fmt"
	"path"

	"github.com/ezfs/ezfs/backing"
	"github.com/ezfs/ezfs/crypto"
	"github.com/ezfs/ezfs/fs"
	"github.com/ezfs/ezfs/zones"
	"golang.org/x/sys/unix"
)

// fileCheck is one regular file being checked.
type fileCheck struct {
	c    *checker
	it   item
	path string // relative to the backing root
	fd   int
	st   unix.Stat_t
	res  fileResult
}

func (f *fileCheck) problem(kind Kind, format string, a ...any) {
	f.res.problems = append(f.res.problems, Problem{Kind: kind, Path: f.path, Zone: f.it.z.entry.Path, Detail: fmt.Sprintf(format, a...)})
}

// checkFile checks one regular file of a zone: its EDEK, header and tail, and with
// Full every block. buf is the worker's block buffer.
func (c *checker) checkFile(it item, buf *[]byte) fileResult {
	f := &fileCheck{c: c, it: it, path: path.Join(it.z.entry.Path, it.rel), res: fileResult{z: it.z}}
	if !f.open() {
		return f.res
	}
	defer unix.Close(f.fd)
	if f.st.Nlink > 1 {
		if _, dup := c.seen.LoadOrStore([2]uint64{f.st.Dev, f.st.Ino}, true); dup {
			f.res.link = true
			return f.res
		}
	}
	dek, e := f.openEDEK()
	if dek == nil {
		return f.res
	}
	defer crypto.Zero(dek)
	f.res.empty = f.st.Size == 0
	if f.st.Size == 0 || !f.header(e) {
		return f.res
	}
	cc, err := crypto.NewContentCipher(dek, e.FileID)
	if err != nil {
		f.problem(KindBadEDEK, "its data key is unusable: %v", err)
		return f.res
	}
	f.contents(cc, buf)
	return f.res
}

// open opens the file without following a symlink and without touching its access
// time; false if there is nothing to check.
func (f *fileCheck) open() bool {
	flags := unix.O_RDONLY | unix.O_NONBLOCK | unix.O_NOCTTY
	fd, err := f.c.fsys.Root().Open(f.path, flags|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		fd, err = f.c.fsys.Root().Open(f.path, flags, 0)
	}
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) {
		f.res.gone = true
		return false
	}
	if err != nil {
		f.problem(KindUnreadable, "open: %v", err)
		return false
	}
	if err := backing.Stat(fd, &f.st); err != nil || f.st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		f.res.gone = err == nil // replaced by another kind of file since it was listed
		if err != nil {
			f.problem(KindUnreadable, "stat: %v", err)
		}
		return false
	}
	f.fd = fd
	return true
}

// openEDEK reads, parses and opens the file's EDEK under its key version; nil if it
// cannot (the reason is a problem, or the run's fatal error).
func (f *fileCheck) openEDEK() ([]byte, *crypto.EDEK) {
	rec, err := zones.ReadEDEK(f.fd)
	if errors.Is(err, zones.ErrNoEDEK) && f.st.Size == 0 {
		f.problem(KindInterruptedCreate, "an empty file without an EDEK (%s): a create cut short by a crash; it holds no data, and the mount answers EIO on its open: remove it", zones.XattrEDEK)
		return nil, nil
	}
	if errors.Is(err, zones.ErrNoEDEK) {
		f.problem(KindPlaintext, "no EDEK (%s): %d bytes stored in the clear, put on the backing disk directly", zones.XattrEDEK, f.st.Size)
		return nil, nil
	}
	if err != nil {
		f.problem(KindUnreadable, "%v", err)
		return nil, nil
	}
	e, err := crypto.ParseEDEK(rec)
	if err != nil {
		f.problem(KindBadEDEK, "the EDEK record does not parse: %v", err)
		return nil, nil
	}
	z := f.it.z.entry.Zone
	ref := verRef{e.KeyNameIn(z.Key), e.KeyVersion}
	f.res.hasRef, f.res.ref = true, ref
	s := f.c.keys.ready(f.c.ctx, ref)
	switch {
	case s.fatal != nil:
		f.res.fatal = s.fatal
		return nil, nil
	case s.missing:
		f.problem(KindBadEDEK, "the EDEK names key version %s, which the keystore does not have", ref)
		return nil, nil
	case s.unreadable != "":
		f.problem(KindBadEDEK, "unreadable: the EDEK is under %s", s.unreadable)
		return nil, nil
	case s.notChecked != "":
		f.res.notChecked = true
		return nil, nil
	case s.broken != "":
		return nil, nil // reported once, as a zone-key problem
	}
	dek, _, err := f.c.keys.keys.OpenFileKey(f.c.ctx, z, rec)
	if err != nil {
		f.problem(KindBadEDEK, "the EDEK does not open under %s: %v", ref, err)
		return nil, nil
	}
	return dek, e
}

// header checks that the content header names the file the EDEK does; false if the
// contents cannot be checked further. A file shorter than the header is a torn tail
// only if it is a prefix of the header (crypto.CheckTornHeader, the daemon's rule).
func (f *fileCheck) header(e *crypto.EDEK) bool {
	if f.st.Size < crypto.HeaderSize {
		b := make([]byte, f.st.Size)
		if err := fs.ReadFull(f.fd, b, 0); err != nil {
			f.problem(KindUnreadable, "read the header: %v", err)
			return false
		}
		if err := crypto.CheckTornHeader(b, e.FileID); err != nil {
			f.problem(KindBadHeader, "%d bytes, shorter than a content header and not the start of this file's, so not a torn write (never cut): %v", f.st.Size, err)
			return false
		}
		return true
	}
	var h [crypto.HeaderSize]byte
	if err := fs.ReadFull(f.fd, h[:], 0); err != nil {
		f.problem(KindUnreadable, "read the header: %v", err)
		return false
	}
	err := crypto.CheckHeader(h[:], e.FileID)
	switch {
	case errors.Is(err, crypto.ErrAuth):
		f.problem(KindBadHeader, "the content header names another file than the EDEK (file ID %x, the EDEK has %x)", h[6:], e.FileID[:])
		return false
	case err != nil:
		f.problem(KindBadHeader, "the contents do not start with an ezfs header (stored in the clear?): %v", err)
		return false
	}
	return true
}
