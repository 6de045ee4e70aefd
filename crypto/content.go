package crypto

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// Content format, version 1:
//
//	header:  magic "EZFS" ‖ version uint16 BE ‖ file ID [16]byte          (22 bytes)
//	block i: nonce [12]byte ‖ AES-256-GCM(plaintext[i*4096 : (i+1)*4096]) ‖ tag [16]byte
//
// The associated data of block i is version ‖ file ID ‖ i, so a block cannot be moved
// within a file or to another file. An empty file has an empty backing file: the header
// is written together with the first byte.
const (
	BlockSize      = 4096
	NonceSize      = 12
	TagSize        = 16
	BlockOverhead  = NonceSize + TagSize
	CipherBlockLen = BlockSize + BlockOverhead
	FileIDSize     = 16
	HeaderSize     = 4 + 2 + FileIDSize
	DEKSize        = 32

	contentVersion uint16 = 1
)

var headerMagic = []byte("EZFS")

// ErrAuth reports ciphertext that does not authenticate: tampering, a wrong key, or
// material moved from elsewhere. Callers must never return such data.
var ErrAuth = errors.New("authentication failed")

// ErrFormat reports bytes that are not in a format this version understands.
var ErrFormat = errors.New("malformed data")

// errClosed answers a block sealed or opened with a cipher already closed: a bug of
// the caller's, reported rather than a panic.
var errClosed = errors.New("content cipher used after Close")

// FileID identifies a file's contents; it is bound into every block and the EDEK.
type FileID [FileIDSize]byte

// NewFileID returns a random file ID.
func NewFileID() (FileID, error) {
	var id FileID
	_, err := rand.Read(id[:])
	return id, err
}

// NewDEK returns a fresh random data key. The caller zeroes it when done.
func NewDEK() ([]byte, error) {
	k := make([]byte, DEKSize)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	return k, nil
}

// Header returns the content header for id.
func Header(id FileID) []byte {
	h := make([]byte, 0, HeaderSize)
	h = append(h, headerMagic...)
	h = binary.BigEndian.AppendUint16(h, contentVersion)
	return append(h, id[:]...)
}

// CheckHeader verifies that h is a version-1 header for file id.
func CheckHeader(h []byte, id FileID) error {
	if len(h) != HeaderSize || !bytes.Equal(h[:4], headerMagic) {
		return fmt.Errorf("content header: %w", ErrFormat)
	}
	if v := binary.BigEndian.Uint16(h[4:6]); v != contentVersion {
		return fmt.Errorf("content header version %d: %w", v, ErrFormat)
	}
	if !bytes.Equal(h[6:], id[:]) {
		return fmt.Errorf("content header names another file: %w", ErrAuth)
	}
	return nil
}

// PlainSize converts a backing file size into the plaintext size. A size that no
// sequence of writes can produce is reported as ErrFormat.
func PlainSize(backing int64) (int64, error) {
	if backing == 0 {
		return 0, nil
	}
	if backing < HeaderSize {
		return 0, fmt.Errorf("backing size %d: %w", backing, ErrFormat)
	}
	body := backing - HeaderSize
	full, rest := body/CipherBlockLen, body%CipherBlockLen
	if rest == 0 {
		return full * BlockSize, nil
	}
	if rest <= BlockOverhead {
		return 0, fmt.Errorf("backing size %d: %w", backing, ErrFormat)
	}
	return full*BlockSize + rest - BlockOverhead, nil
}

// IntactPlainSize is PlainSize for a backing file that may end in a write cut short by
// a crash: a header cut short, or 1 to BlockOverhead bytes past the whole blocks (too
// few to be a block), count as absent. Whether the last block authenticates is for
// the caller to check.
func IntactPlainSize(backing int64) int64 {
	if backing < HeaderSize {
		return 0
	}
	body := backing - HeaderSize
	size := body / CipherBlockLen * BlockSize
	if rest := body % CipherBlockLen; rest > BlockOverhead {
		size += rest - BlockOverhead
	}
	return size
}

// BackingSize converts a plaintext size into the backing file size.
func BackingSize(plain int64) int64 {
	if plain == 0 {
		return 0
	}
	full, rest := plain/BlockSize, plain%BlockSize
	n := HeaderSize + full*CipherBlockLen
	if rest > 0 {
		n += rest + BlockOverhead
	}
	return n
}

// BlockOffset is where block i starts in the backing file.
func BlockOffset(i int64) int64 {
	return HeaderSize + i*CipherBlockLen
}

// ContentCipher seals and opens the blocks of one file. It is safe for concurrent use.
// The AES-GCM key schedule (1.3 KiB) is made at the first block: most files created or
// opened are closed again without a block read or written (touch, a create that is
// renamed, an open for fstat), and for them the key schedule was work and garbage.
type ContentCipher struct {
	id FileID

	once sync.Once
	// key holds the DEK until once makes aead from it, or Close zeroes it.
	key  [DEKSize]byte
	aead cipher.AEAD // set by once
}

// NewContentCipher builds the block cipher of a file from its DEK. The DEK slice may be
// zeroed by the caller afterwards: the cipher keeps a copy (and later the AES key
// schedule) of its own, which Close zeroes.
func NewContentCipher(dek []byte, id FileID) (*ContentCipher, error) {
	if len(dek) != DEKSize {
		return nil, fmt.Errorf("data key is %d bytes, want %d: %w", len(dek), DEKSize, ErrFormat)
	}
	c := &ContentCipher{id: id}
	copy(c.key[:], dek)
	return c, nil
}

// gcm returns the cipher's AEAD, made from the key at the first call; nil after Close.
func (c *ContentCipher) gcm() cipher.AEAD {
	c.once.Do(func() {
		// AES-256 and GCM with the standard nonce and tag refuse no 32-byte key.
		b, err := aes.NewCipher(c.key[:])
		Zero(c.key[:])
		if err != nil {
			return
		}
		c.aead, _ = cipher.NewGCM(b)
		// GCM keeps a copy of the key schedule: the one it was made from is garbage now.
		wipe(b)
	})
	return c.aead
}

// Close zeroes the cipher's key, key schedule and hash key (as far as the standard
// library's types let it, see wipe) and drops them; the cipher must not be used
// afterwards.
func (c *ContentCipher) Close() {
	if c == nil {
		return
	}
	c.once.Do(func() {}) // no schedule is made from here on
	Zero(c.key[:])
	if c.aead != nil {
		wipe(c.aead)
		c.aead = nil
	}
}

// FileID returns the file ID the cipher binds blocks to.
func (c *ContentCipher) FileID() FileID { return c.id }

func (c *ContentCipher) blockAD(buf *[2 + FileIDSize + 8]byte, i int64) []byte {
	binary.BigEndian.PutUint16(buf[:2], contentVersion)
	copy(buf[2:], c.id[:])
	binary.BigEndian.PutUint64(buf[2+FileIDSize:], uint64(i))
	return buf[:]
}

// SealBlock appends the sealed form of plaintext block i (at most BlockSize bytes) to dst.
func (c *ContentCipher) SealBlock(dst, plain []byte, i int64) ([]byte, error) {
	if len(plain) == 0 || len(plain) > BlockSize {
		return nil, fmt.Errorf("block of %d bytes: %w", len(plain), ErrFormat)
	}
	start := len(dst)
	dst = append(dst, make([]byte, NonceSize)...)
	nonce := dst[start : start+NonceSize]
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	aead := c.gcm()
	if aead == nil {
		return nil, errClosed
	}
	var ad [2 + FileIDSize + 8]byte
	return aead.Seal(dst, nonce, plain, c.blockAD(&ad, i)), nil
}

// OpenBlock appends the plaintext of sealed block i to dst. A sealed block of all zero
// bytes and full length is a hole left by a sparse write or a truncate and opens to
// zeros, as in gocryptfs; anything else that does not authenticate is ErrAuth.
func (c *ContentCipher) OpenBlock(dst, sealed []byte, i int64) ([]byte, error) {
	if len(sealed) <= BlockOverhead || len(sealed) > CipherBlockLen {
		return nil, fmt.Errorf("block %d: sealed length %d: %w", i, len(sealed), ErrFormat)
	}
	aead := c.gcm()
	if aead == nil {
		return nil, errClosed
	}
	var ad [2 + FileIDSize + 8]byte
	out, err := aead.Open(dst, sealed[:NonceSize], sealed[NonceSize:], c.blockAD(&ad, i))
	if err == nil {
		return out, nil
	}
	// Checked only after a failed open, so the common path never scans the block.
	if len(sealed) == CipherBlockLen && allZero(sealed) {
		return append(dst, make([]byte, BlockSize)...), nil
	}
	return nil, fmt.Errorf("block %d: %w", i, ErrAuth)
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// Zero overwrites key material in place.
func Zero(b []byte) {
	clear(b)
}
