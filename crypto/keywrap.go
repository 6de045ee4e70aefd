package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
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
	out := make([]byte, len(c)-8)
	if err := unwrapInto(b, c, out); err != nil {
		return nil, err
	}
	return out, nil
}

// unwrapInto unwraps c (at least 24 bytes, a multiple of 8) under b into out
// (len(c)-8 bytes), and zeroes out when the integrity check fails.
func unwrapInto(b cipher.Block, c, out []byte) error {
	n := len(c)/8 - 1
	out = out[:8*n]
	copy(out, c[8:])
	var buf [16]byte
	a := binary.BigEndian.Uint64(c[:8])
	for j := 5; j >= 0; j-- {
		for i := n; i >= 1; i-- {
			r := out[8*(i-1) : 8*i : 8*i]
			binary.BigEndian.PutUint64(buf[:8], a^uint64(n*j+i))
			copy(buf[8:], r)
			b.Decrypt(buf[:], buf[:])
			a = binary.BigEndian.Uint64(buf[:8])
			copy(r, buf[8:])
		}
	}
	binary.BigEndian.PutUint64(buf[:8], a)
	ok := subtle.ConstantTimeCompare(buf[:8], kwIV[:]) == 1
	clear(buf[:])
	if !ok {
		Zero(out)
		return fmt.Errorf("key unwrap: integrity check failed: %w", ErrAuth)
	}
	return nil
}
