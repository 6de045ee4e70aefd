package fsck

import (
	"errors"

	"github.com/ezfs/ezfs/backing"
	"github.com/ezfs/ezfs/crypto"
	"github.com/ezfs/ezfs/fs"
)

// scanChunk is how many blocks --full reads at once.
const scanChunk = 64

// contents checks the tail of the file (crypto.IntactSize, the rule the daemon applies
// at open), repairs a torn one, and with Full authenticates every block.
func (f *fileCheck) contents(cc *crypto.ContentCipher, buf *[]byte) {
	size := f.st.Size
	read := func(b []byte, off int64) error { return fs.ReadFull(f.fd, b, off) }
	intact, whole, err := cc.IntactSize(read, crypto.IntactPlainSize(size))
	if err != nil {
		f.problem(KindUnreadable, "read the last block: %v", err)
		return
	}
	f.res.bytes = intact
	if keep := crypto.BackingSize(intact); keep != size {
		f.torn(intact, keep)
	}
	if !whole {
		last := (intact - 1) / crypto.BlockSize
		f.badBlocks(last, last, intact)
	}
	if f.c.o.Full && intact > 0 {
		f.scan(cc, intact, buf)
	}
}

// torn reports (and with Repair cuts) the bytes past the last intact block.
func (f *fileCheck) torn(intact, keep int64) {
	size := f.st.Size
	f.problem(KindTornTail, "backing size %d holds %d intact plaintext bytes: %d bytes past the last intact block, left by a write cut short",
		size, intact, size-keep)
	if !f.c.o.Repair {
		return
	}
	p := &f.res.problems[len(f.res.problems)-1]
	err := backing.Truncate(f.fd, keep)
	f.c.audit.Action("fsck.repair", map[string]any{"what": "torn tail", "path": "/" + f.path, "size": size, "cut_to": keep}, err)
	if err != nil {
		p.Detail += "; not repaired: " + err.Error()
		return
	}
	p.Repaired = true
	p.Detail += "; cut to the last intact block"
}

// badBlocks reports blocks first..last (of a file of intact plaintext bytes) that do
// not authenticate.
func (f *fileCheck) badBlocks(first, last, intact int64) {
	from, to := first*crypto.BlockSize, min((last+1)*crypto.BlockSize, intact)
	f.problem(KindBadBlock, "blocks %d-%d (plaintext bytes %d-%d, backing bytes %d-%d) do not authenticate: tampered or damaged",
		first, last, from, to, crypto.BlockOffset(first), min(crypto.BlockOffset(last+1), crypto.BackingSize(intact)))
	p := &f.res.problems[len(f.res.problems)-1]
	p.From, p.To = from, to
}

// scan authenticates every block but the last (contents checked that one), and
// reports the runs of bad ones.
func (f *fileCheck) scan(cc *crypto.ContentCipher, intact int64, buf *[]byte) {
	if cap(*buf) < scanChunk*crypto.CipherBlockLen {
		*buf = make([]byte, scanChunk*crypto.CipherBlockLen)
	}
	end := crypto.BackingSize(intact)
	blocks := (intact-1)/crypto.BlockSize + 1
	var plain [crypto.BlockSize]byte
	bad := int64(-1) // first block of the current run of bad blocks
	for i := int64(0); i < blocks-1; i += scanChunk {
		n := min(scanChunk, blocks-1-i)
		off := crypto.BlockOffset(i)
		chunk := (*buf)[:min(n*crypto.CipherBlockLen, end-off)]
		if err := fs.ReadFull(f.fd, chunk, off); err != nil {
			f.problem(KindUnreadable, "read blocks %d-%d: %v", i, i+n-1, err)
			return
		}
		for j := int64(0); j < n; j++ {
			sealed := chunk[j*crypto.CipherBlockLen : (j+1)*crypto.CipherBlockLen]
			_, err := cc.OpenBlock(plain[:0], sealed, i+j)
			switch {
			case err != nil && !errors.Is(err, crypto.ErrAuth) && !errors.Is(err, crypto.ErrFormat):
				f.problem(KindUnreadable, "block %d: %v", i+j, err)
				return
			case err != nil && bad < 0:
				bad = i + j
			case err == nil && bad >= 0:
				f.badBlocks(bad, i+j-1, intact)
				bad = -1
			}
		}
	}
	if bad >= 0 {
		f.badBlocks(bad, blocks-2, intact)
	}
}
