package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"
)

// AES key wrap, RFC 3394 §2.2 (the index-based form of §2.2.1 and §2.2.2) with the
// default initial value of §2.2.3.1. The EDEK record v2 wraps a 32-byte DEK into 40
// bytes with it. Unwrapping checks the 64-bit integrity value: a wrong key or a
// changed byte is ErrAuth.

// kwIV is the default initial value of RFC 3394 §2.2.3.1.
var kwIV = [8]byte{0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6}

// WrapKey wraps key data p (a multiple of 8 bytes, at least 16) under kek (an AES
// key: 16, 24 or 32 bytes). The result is 8 bytes longer than p.
func WrapKey(kek, p []byte) ([]byte, error) {
	if len(p) < 16 || len(p)%8 != 0 {
		return nil, fmt.Errorf("key wrap: %d bytes of key data: %w", len(p), ErrFormat)
	}
	b, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	n := len(p) / 8
	out := make([]byte, 8+len(p))
	copy(out[8:], p)
	var buf [16]byte
	copy(buf[:8], kwIV[:]) // A
	for j := 0; j < 6; j++ {
		for i := 1; i <= n; i++ {
			r := out[8*i : 8*i+8]
			copy(buf[8:], r)
			b.Encrypt(buf[:], buf[:])
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(buf[:8], binary.BigEndian.Uint64(buf[:8])^t)
			copy(r, buf[8:])
		}
	}
	copy(out[:8], buf[:8])
	clear(buf[:])
	return out, nil
}

// UnwrapKey reverses WrapKey. The caller zeroes the result.
func UnwrapKey(kek, c []byte) ([]byte, error) {
	if len(c) < 24 || len(c)%8 != 0 {
		return nil, fmt.Errorf("key unwrap: %d bytes of wrapped key: %w", len(c), ErrFormat)
	}
	b, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	out := make([]byte, len(c)-8+kwScratch)
	if err := unwrapInto(b, c, out); err != nil {
		return nil, err
	}
	return out[: len(c)-8 : len(c)-8], nil
}

// kwScratch is the room unwrapInto needs after the key data for its working block:
// one on the stack would escape to the heap through the cipher.Block interface, an
// allocation per record.
const kwScratch = 16

// unwrapInto unwraps c (at least 24 bytes, a multiple of 8) under b into out, which
// holds len(c)-8 bytes of key data followed by kwScratch bytes of scratch (zeroed on
// return). It zeroes the key data when the integrity check fails.
func unwrapInto(b cipher.Block, c, out []byte) error {
	n := len(c)/8 - 1
	r, buf := out[:8*n], out[8*n:8*n+kwScratch]
	copy(r, c[8:])
	a := binary.BigEndian.Uint64(c[:8])
	for j := 5; j >= 0; j-- {
		for i := n; i >= 1; i-- {
			ri := r[8*(i-1) : 8*i]
			binary.BigEndian.PutUint64(buf, a^uint64(n*j+i))
			copy(buf[8:], ri)
			b.Decrypt(buf, buf)
			a = binary.BigEndian.Uint64(buf)
			copy(ri, buf[8:])
		}
	}
	clear(buf)
	// One comparison of a machine word: its time does not depend on which bytes differ.
	if a != kwIVWord {
		Zero(r)
		return fmt.Errorf("key unwrap: integrity check failed: %w", ErrAuth)
	}
	return nil
}

// kwIVWord is kwIV as the big-endian word the unwrap loop computes.
const kwIVWord = 0xA6A6A6A6A6A6A6A6
