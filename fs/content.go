package fs

import (
	"fmt"
	"io"
	"math"
	"syscall"

	"github.com/ezfs/ezfs/crypto"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// The content functions below implement the block format on a backing descriptor.
// Every one of them is called with s.mu held (for reading in readLocked, for writing in
// the others), with s.cc and s.size loaded.

const bs = crypto.BlockSize

// sealedLen is the length of block i in a backing file holding `size` plaintext bytes.
func sealedLen(i, size int64) int64 {
	if rest := size - i*bs; rest < bs {
		return rest + crypto.BlockOverhead
	}
	return crypto.CipherBlockLen
}

// preadFull reads exactly len(b) bytes; a short backing file is corruption.
func preadFull(fd int, b []byte, off int64) error {
	for done := 0; done < len(b); {
		k, err := syscall.Pread(fd, b[done:], off+int64(done))
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if k == 0 {
			return fmt.Errorf("backing file ends at %d, want %d: %w", off+int64(done), off+int64(len(b)), crypto.ErrFormat)
		}
		done += k
	}
	return nil
}

// ReadFull reads exactly len(b) bytes of the backing file open as fd, from off; a file
// that ends before is crypto.ErrFormat. fsck reads zone files with it.
func ReadFull(fd int, b []byte, off int64) error { return preadFull(fd, b, off) }

func pwriteFull(fd int, b []byte, off int64) error {
	for done := 0; done < len(b); {
		k, err := syscall.Pwrite(fd, b[done:], off+int64(done))
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if k == 0 {
			return io.ErrShortWrite
		}
		done += k
	}
	return nil
}

// readLocked fills dest with plaintext from off and returns how many bytes it read.
func (s *state) readLocked(fd int, dest []byte, off int64) (int, error) {
	size := s.size
	if off >= size || len(dest) == 0 {
		return 0, nil
	}
	end := min(off+int64(len(dest)), size)
	first, last := off/bs, (end-1)/bs
	start := crypto.BlockOffset(first)
	stop := crypto.BlockOffset(last) + sealedLen(last, size)
	sealedBuf := getBuf(int(stop - start))
	defer putBuf(sealedBuf)
	sealed := *sealedBuf
	if err := preadFull(fd, sealed, start); err != nil {
		return 0, err
	}
	// Block j of the request opens to plain[j*bs:]; all but the last are full.
	total := int((last-first)*bs + sealedLen(last, size) - crypto.BlockOverhead)
	// Reads the page cache makes start on a block and end on one or at EOF: their
	// plaintext goes straight into dest.
	var plain []byte
	direct := off%bs == 0 && (end == size || (end-off)%bs == 0)
	if direct {
		plain = dest[:total]
	} else {
		plainBuf := getBuf(total)
		defer putBuf(plainBuf)
		plain = *plainBuf
	}
	for j := 0; j <= int(last-first); j++ {
		i := first + int64(j)
		c := sealed[j*crypto.CipherBlockLen:]
		c = c[:sealedLen(i, size)]
		// The capacity is the block's share: a longer result would be reallocated
		// rather than overwrite the next block, and is refused.
		p := plain[j*bs : j*bs : min((j+1)*bs, total)]
		got, err := s.cc.OpenBlock(p, c, i)
		if err != nil {
			return 0, err
		}
		if len(got) != cap(p) {
			return 0, fmt.Errorf("block %d opened to %d bytes, want %d: %w", i, len(got), cap(p), crypto.ErrFormat)
		}
	}
	if direct {
		return total, nil
	}
	return copy(dest, plain[off-first*bs:end-first*bs]), nil
}

// openBlockLocked returns the plaintext of existing block i appended to dst.
func (s *state) openBlockLocked(fd int, dst []byte, i int64) ([]byte, error) {
	l := sealedLen(i, s.size)
	var b [crypto.CipherBlockLen]byte
	if err := preadFull(fd, b[:l], crypto.BlockOffset(i)); err != nil {
		return nil, err
	}
	return s.cc.OpenBlock(dst, b[:l], i)
}

// undo is what a change needs to put the backing file back as it was when one of its
// steps fails: the old size, and the old sealed last block if a step overwrote it
// (writes past the end of a file reach no other existing byte).
type undo struct {
	size  int64
	saved bool
	last  [crypto.CipherBlockLen]byte
}

// beginLocked starts a change of contents or size. A torn tail left by a crash is cut
// first, so that a shorter last block written now cannot leave its bytes behind.
func (s *state) beginLocked(fd int, u *undo) error {
	if s.torn {
		if err := syscall.Ftruncate(fd, crypto.BackingSize(s.size)); err != nil {
			return err
		}
		s.torn = false
	}
	u.size, u.saved = s.size, false
	return nil
}

// abortLocked puts the file back as it was before a change whose step failed with err,
// and returns err.
func (s *state) abortLocked(fd int, u *undo, err error) error {
	var rerr error
	if u.saved {
		i := (u.size - 1) / bs
		rerr = pwriteFull(fd, u.last[:sealedLen(i, u.size)], crypto.BlockOffset(i))
	}
	if terr := syscall.Ftruncate(fd, crypto.BackingSize(u.size)); rerr == nil {
		rerr = terr
	}
	s.size = u.size
	if rerr != nil {
		s.fsys.log.Printf("%s: putting the file back after %v: %v", s.path(), err, rerr)
	}
	return err
}

// oldLastLocked returns the sealed last block the file had when the change began, read
// once per change, if block i is that block; else nil.
func (s *state) oldLastLocked(fd int, u *undo, i int64) ([]byte, error) {
	if u.size == 0 || i != (u.size-1)/bs {
		return nil, nil
	}
	l := sealedLen(i, u.size)
	if !u.saved {
		if err := preadFull(fd, u.last[:l], crypto.BlockOffset(i)); err != nil {
			return nil, err
		}
		u.saved = true
	}
	return u.last[:l], nil
}

// openOldLocked is openBlockLocked that keeps the old last block for abortLocked.
func (s *state) openOldLocked(fd int, u *undo, dst []byte, i int64) ([]byte, error) {
	old, err := s.oldLastLocked(fd, u, i)
	if err != nil || old == nil {
		if err != nil {
			return nil, err
		}
		return s.openBlockLocked(fd, dst, i)
	}
	return s.cc.OpenBlock(dst, old, i)
}

// reserve allocates the holes in the part of backing range [off, off+length) that
// lies within the file as it was when the change began, without changing the size, so
// that writes over a hole of a sparse file cannot fail half-way for lack of space
// (ENOSPC, EDQUOT) and leave a block that is neither the old zeros nor the new data.
// Bytes already written need no reservation, and neither does what lies past the old
// end: a failed step there is undone by cutting the file back and writing the old
// last block again (abortLocked). Preallocating those ranges would force the backing
// file system to allocate blocks it would have allocated later in one piece (ext4's
// delayed allocation): zone files then lay in more extents, and rm -rf of a tree was
// a fifth slower.
//
// Holes are looked for from s.holeFrom only, which moves up past the data SEEK_HOLE
// finds: a file without holes below the range makes no call, and none is made twice
// over the same data (a SEEK_HOLE from the write's offset walks the file's data up to
// its end: every 4 KiB random write paid for it, at a quarter of the rate). A backing
// file system that cannot find holes or preallocate writes as before.
func (s *state) reserve(fd int, u *undo, off, length int64) error {
	limit := min(off+length, crypto.BackingSize(u.size))
	if limit <= off || limit <= s.holeFrom {
		return nil
	}
	hole, err := unix.Seek(fd, s.holeFrom, unix.SEEK_HOLE)
	if err != nil {
		s.holeFrom = math.MaxInt64
		return nil
	}
	s.holeFrom = hole
	if hole >= limit {
		return nil
	}
	from := max(off, hole)
	err = syscall.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, from, limit-from)
	if err == syscall.EOPNOTSUPP || err == syscall.ENOSYS {
		return nil
	}
	return err
}

// pwriteTailFirst writes b at off, its bytes from split on first. When split is the
// end of the old last block, a kill of the daemon between the two writes, or inside
// the first one, leaves that block whole in front of new bytes, where
// intactSizeLocked finds it again; the second write, confined to the old block, is
// not cut by a kill when it stays within one page (the kernel checks for a fatal
// signal only between pages).
func pwriteTailFirst(fd int, b []byte, off, split int64) error {
	if k := split - off; k > 0 && k < int64(len(b)) {
		if err := pwriteFull(fd, b[k:], split); err != nil {
			return err
		}
		b = b[:k]
	}
	return pwriteFull(fd, b, off)
}

func (s *state) writeHeaderLocked(fd int) error {
	return pwriteFull(fd, crypto.Header(s.cc.FileID()), 0)
}

// writeLocked writes data at off, sealing every touched block afresh. A write that
// fails leaves the file as it was.
func (s *state) writeLocked(fd int, data []byte, off int64) error {
	if len(data) == 0 {
		return nil
	}
	if err := s.resyncLocked(fd); err != nil {
		return err
	}
	var u undo
	if err := s.beginLocked(fd, &u); err != nil {
		return err
	}
	if err := s.writeStepsLocked(fd, &u, data, off); err != nil {
		return s.abortLocked(fd, &u, err)
	}
	return nil
}

func (s *state) writeStepsLocked(fd int, u *undo, data []byte, off int64) error {
	// A write past the end first extends the file with zeros up to the start of the
	// block that holds off, so the loop below only sees blocks it can compose.
	if blockStart := off - off%bs; blockStart > s.size {
		if err := s.extendStepsLocked(fd, u, blockStart); err != nil {
			return err
		}
	}
	end := off + int64(len(data))
	first, last := off/bs, (end-1)/bs
	// Block j of the request is sealed to out[j*CipherBlockLen:]; only the last can be
	// short, at the new end of file.
	lastLen := min(max(s.size, end)-last*bs, bs)
	total := int(last-first)*crypto.CipherBlockLen + int(lastLen) + crypto.BlockOverhead
	start := crypto.BlockOffset(first)
	if s.size == 0 {
		if err := s.writeHeaderLocked(fd); err != nil {
			return err
		}
	} else if err := s.reserve(fd, u, start, int64(total)); err != nil {
		return err
	}
	outBuf := getBuf(total)
	defer putBuf(outBuf)
	out := *outBuf
	var block [bs]byte
	for j := 0; j <= int(last-first); j++ {
		i := first + int64(j)
		bstart := i * bs
		oldLen := min(max(s.size-bstart, 0), bs)
		wStart := max(off, bstart) - bstart
		wEnd := min(end, bstart+bs) - bstart
		newLen := max(oldLen, wEnd)
		var pt []byte
		switch {
		case wStart == 0 && wEnd >= oldLen:
			// The write covers the block's old bytes: seal straight from data, keeping
			// the old last block in case a later step fails.
			if _, err := s.oldLastLocked(fd, u, i); err != nil {
				return err
			}
			pt = data[bstart-off : bstart-off+wEnd]
		case oldLen > 0 && (wStart > 0 || wEnd < oldLen):
			if _, err := s.openOldLocked(fd, u, block[:0], i); err != nil {
				return err
			}
			pt = block[:newLen]
			clear(pt[oldLen:])
			copy(pt[wStart:wEnd], data[bstart+wStart-off:bstart+wEnd-off])
		default:
			pt = block[:newLen]
			clear(pt[:wStart])
			copy(pt[wStart:wEnd], data[bstart+wStart-off:bstart+wEnd-off])
		}
		at := j * crypto.CipherBlockLen
		dst := out[at:at:min(at+crypto.CipherBlockLen, total)]
		got, err := s.cc.SealBlock(dst, pt, i)
		if err != nil {
			return err
		}
		if len(got) != cap(dst) {
			return fmt.Errorf("block %d sealed to %d bytes, want %d", i, len(got), cap(dst))
		}
	}
	// The old partial last block is written on its own, tail first, before the blocks
	// past it: a kill then leaves either it or its new version whole.
	cut := total
	if s.size%bs != 0 {
		cut = int(min(crypto.BlockOffset(s.size/bs+1)-start, int64(total)))
	}
	if err := pwriteTailFirst(fd, out[:cut], start, crypto.BackingSize(s.size)); err != nil {
		return err
	}
	if err := pwriteFull(fd, out[cut:], start+int64(cut)); err != nil {
		return err
	}
	s.size = max(s.size, end)
	return nil
}

// rewriteBlockLocked re-seals block i (which must exist) at newLen bytes: truncated,
// or padded with zeros.
func (s *state) rewriteBlockLocked(fd int, u *undo, i, newLen int64) error {
	var block [bs]byte
	pt, err := s.openOldLocked(fd, u, block[:0], i)
	if err != nil {
		return err
	}
	pt = pt[:newLen]
	if oldLen := min(s.size-i*bs, bs); newLen > oldLen {
		clear(pt[oldLen:])
	}
	var sealed [crypto.CipherBlockLen]byte
	out, err := s.cc.SealBlock(sealed[:0], pt, i)
	if err != nil {
		return err
	}
	at := crypto.BlockOffset(i)
	if err := s.reserve(fd, u, at, int64(len(out))); err != nil {
		return err
	}
	return pwriteTailFirst(fd, out, at, at+sealedLen(i, s.size))
}

// extendLocked grows the file to size with zeros. Whole blocks of zeros become holes
// in the backing file; a partial last block is sealed, so the file never ends in a
// hole. An extension that fails leaves the file as it was.
func (s *state) extendLocked(fd int, size int64) error {
	var u undo
	if err := s.beginLocked(fd, &u); err != nil {
		return err
	}
	if err := s.extendStepsLocked(fd, &u, size); err != nil {
		return s.abortLocked(fd, &u, err)
	}
	return nil
}

func (s *state) extendStepsLocked(fd int, u *undo, size int64) error {
	if size <= s.size {
		return nil
	}
	if s.size == 0 {
		if err := s.writeHeaderLocked(fd); err != nil {
			return err
		}
	}
	if s.size%bs != 0 {
		i := s.size / bs
		newLen := min(size-i*bs, bs)
		if err := s.rewriteBlockLocked(fd, u, i, newLen); err != nil {
			return err
		}
		s.size = i*bs + newLen
		if s.size == size {
			return nil
		}
	}
	last := (size - 1) / bs
	s.holeFrom = min(s.holeFrom, crypto.BackingSize(s.size)) // the blocks skipped are holes
	if tail := size - last*bs; tail == bs {
		if err := syscall.Ftruncate(fd, crypto.BackingSize(size)); err != nil {
			return err
		}
	} else {
		zeros := make([]byte, tail)
		sealed, err := s.cc.SealBlock(nil, zeros, last)
		if err != nil {
			return err
		}
		at := crypto.BlockOffset(last)
		if err := syscall.Ftruncate(fd, at); err != nil {
			return err
		}
		if err := pwriteFull(fd, sealed, at); err != nil {
			return err
		}
	}
	s.size = size
	return nil
}

// zeroLocked turns plaintext [off, end) within the file into zeros, its size kept.
// Whole blocks become holes in the backing file (a hole opens to zeros); the partial
// blocks at either edge, and a short last block, which cannot be a hole, are sealed
// again with zeros written over the range.
func (s *state) zeroLocked(fd int, off, end int64) error {
	end = min(end, s.size)
	if off >= end {
		return nil
	}
	var zeros [bs]byte
	// zero seals [from, to), within one block, again with zeros.
	zero := func(from, to int64) error {
		if from >= to {
			return nil
		}
		return s.writeLocked(fd, zeros[:to-from], from)
	}
	holeFirst, holeEnd := (off+bs-1)/bs, end/bs // blocks wholly inside the range
	if holeFirst >= holeEnd {
		// No whole block: the range ends in the block it starts in, or the next.
		mid := min(end, (off/bs+1)*bs)
		if err := zero(off, mid); err != nil {
			return err
		}
		return zero(mid, end)
	}
	// Holes first: a backing file system that cannot punch them (ramfs) refuses the
	// call before anything has changed.
	start := crypto.BlockOffset(holeFirst)
	s.holeFrom = min(s.holeFrom, start)
	if err := syscall.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, start, crypto.BlockOffset(holeEnd)-start); err != nil {
		return err
	}
	if err := zero(off, holeFirst*bs); err != nil {
		return err
	}
	return zero(holeEnd*bs, end)
}

// truncateLocked sets the plaintext size. A truncate that fails leaves the file as it
// was, except that a shrink into a partial block may have dropped the blocks past it.
func (s *state) truncateLocked(fd int, size int64) error {
	var u undo
	if err := s.beginLocked(fd, &u); err != nil {
		return err
	}
	switch {
	case size == s.size:
		return nil
	case size > s.size:
		if err := s.extendStepsLocked(fd, &u, size); err != nil {
			return s.abortLocked(fd, &u, err)
		}
		return nil
	case size%bs != 0:
		// The blocks past the new last one go first, so that the one rewritten is the
		// last: a kill inside the rewrite leaves a torn last block, which
		// intactSizeLocked mends.
		i := size / bs
		if err := syscall.Ftruncate(fd, crypto.BlockOffset(i)+sealedLen(i, s.size)); err != nil {
			return err
		}
		s.size = min(s.size, (i+1)*bs)
		u.size = s.size
		if err := s.rewriteBlockLocked(fd, &u, i, size-i*bs); err != nil {
			return s.abortLocked(fd, &u, err)
		}
	}
	if err := syscall.Ftruncate(fd, crypto.BackingSize(size)); err != nil {
		return err
	}
	s.size = size
	return nil
}

// fixSize replaces the backing size in out by the plaintext size for encrypted files.
// While the file has no state (no open) the size is reckoned from the backing size
// alone; a torn last block counts until an open finds it out.
func (n *node) fixSize(out *fuse.Attr, backing int64) {
	if !n.encrypted() {
		return
	}
	var known bool
	var size int64
	if s := n.open.Load(); s != nil {
		s.mu.RLock()
		// On a sharedstorage mount a size another daemon changed is not this one.
		known, size = s.sizeKnown && !s.staleLocked(backing), s.size
		s.mu.RUnlock()
	}
	if !known {
		size = crypto.IntactPlainSize(backing)
	}
	out.Size = uint64(size)
	// Blocks stay the backing file's: that is the space the file really uses.
}

// learnSizeLocked sets s.size from the backing size of the file open as fd, once s.cc
// is set. The last block is opened to make sure it is whole: a crash may have cut the
// file in the middle of a write (see intactSizeLocked).
func (s *state) learnSizeLocked(fd int, backing int64, head []byte) error {
	size, err := s.intactSizeLocked(fd, crypto.IntactPlainSize(backing), head)
	if err != nil {
		return err
	}
	s.size, s.sizeKnown, s.sizeOf = size, true, s.cc.FileID()
	s.torn, s.tornBacking = crypto.BackingSize(size) != backing, backing
	s.holeFrom = 0 // looked for at the first write that needs it: most opens only read
	if s.torn {
		s.fsys.log.Printf("%s: torn tail: backing size %d holds %d intact plaintext bytes (%d backing bytes); the rest is not served and is cut at the next change",
			s.path(), backing, size, crypto.BackingSize(size))
	}
	return nil
}

// intactSizeLocked returns the size of the longest start of a file of size bytes that
// ends in a block that authenticates (crypto.IntactSize: the rule for a write torn by a
// kill of the daemon). A last block that authenticates at no length stays, and reads
// of it fail. head is the start of the backing file if the caller has it read: a last
// block within it is not read again.
func (s *state) intactSizeLocked(fd int, size int64, head []byte) (int64, error) {
	read := func(b []byte, off int64) error {
		if int64(len(head)) >= off+int64(len(b)) {
			copy(b, head[off:])
			return nil
		}
		return preadFull(fd, b, off)
	}
	intact, whole, err := s.cc.IntactSize(read, size)
	if err == nil && !whole {
		s.fsys.log.Printf("%s: its last block (%d) does not authenticate at any length: tampered, or torn by a crash; reads of it answer EIO", s.path(), (size-1)/bs)
	}
	return intact, err
}
