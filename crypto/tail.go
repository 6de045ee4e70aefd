package crypto

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
)

// tailScratch is the room IntactSize opens the last block in. It would escape to the
// heap through read (a function value): 8 KiB per open of a zone file, most of what an
// open of a small file allocated (docs/DESIGN.md).
type tailScratch struct {
	sealed [CipherBlockLen]byte
	plain  [BlockSize]byte
}

var tailPool = sync.Pool{New: func() any { return new(tailScratch) }}

// IntactSize returns the plaintext size of the longest start of a file of size
// plaintext bytes (IntactPlainSize of its backing size) that ends in a block that
// authenticates, and whether its last block authenticates at all. read fills b from
// backing offset off. A write torn by a crash leaves its last block unable to
// authenticate: either the old block, still whole, followed by part of its new tail
// (the daemon writes the tail first), or a new block cut short. The old block is found
// by trying the shorter lengths (at most 4,095 block opens, on this rare path only). A
// block that authenticates at no length is kept (whole is false): tampered, or a new
// block cut short by a crash, which cannot be told apart, and dropping it would let
// anyone who can write the disk cut a file short unseen. Only the key holder can have
// sealed a block found so, for this file and block number.
func (c *ContentCipher) IntactSize(read func(b []byte, off int64) error, size int64) (intact int64, whole bool, err error) {
	if size == 0 {
		return 0, true, nil
	}
	last := (size - 1) / BlockSize
	l := size - last*BlockSize + BlockOverhead
	t := tailPool.Get().(*tailScratch)
	defer func() {
		clear(t.plain[:]) // plaintext of the file's last block
		tailPool.Put(t)
	}()
	sealed, plain := t.sealed[:], t.plain[:]
	if err := read(sealed[:l], BlockOffset(last)); err != nil {
		return 0, false, err
	}
	_, err = c.OpenBlock(plain[:0], sealed[:l], last)
	if !errors.Is(err, ErrAuth) {
		return size, err == nil, err
	}
	for k := l - 1; k > BlockOverhead; k-- {
		if _, err := c.OpenBlock(plain[:0], sealed[:k], last); err == nil {
			return last*BlockSize + k - BlockOverhead, true, nil
		}
	}
	return size, false, nil
}

// CheckTornHeader judges a backing file shorter than the header, b being all of it
// (0 < len(b) < HeaderSize). The header goes to the disk in one write with the first
// block, so a crash inside that write can leave only a strict prefix of file id's
// header: nil, a torn tail (the file holds no byte yet; what is left may be cut).
// Anything else is not what a crash leaves: ErrFormat (ErrAuth when it is another
// file's header cut short), and nobody may cut it away, neither the daemon nor fsck.
func CheckTornHeader(b []byte, id FileID) error {
	if len(b) == 0 || len(b) >= HeaderSize {
		return fmt.Errorf("%d bytes are not a content header cut short: %w", len(b), ErrFormat)
	}
	h := Header(id)
	if bytes.Equal(b, h[:len(b)]) {
		return nil
	}
	if n := min(len(b), len(h)-FileIDSize); bytes.Equal(b[:n], h[:n]) {
		return fmt.Errorf("a content header cut short names another file: %w", ErrAuth)
	}
	return fmt.Errorf("%d bytes, not the start of an ezfs content header: %w", len(b), ErrFormat)
}
