package crypto

import (
	"bytes"
	gocrypto "crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// A zone key version is wrapped with RSA-OAEP under a main key version. The OAEP label
// stays empty (SoftHSM and Vault accept nothing else), so the context is bound inside
// the plaintext instead and checked after unwrap:
//
//	magic "EZZK" ‖ 1 ‖ len(name) uint8 ‖ name ‖ zone key version uint32 BE ‖ key [32]
var zoneKeyMagic = []byte("EZZK")

// ZoneKeySize is the size of a zone key version.
const ZoneKeySize = 32

// NewZoneKey returns a fresh random zone key version.
func NewZoneKey() ([]byte, error) {
	k := make([]byte, ZoneKeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	return k, nil
}

func zoneKeyPlaintext(name string, version uint32, key []byte) []byte {
	b := make([]byte, 0, 10+len(name)+len(key))
	b = append(b, zoneKeyMagic...)
	b = append(b, 1, byte(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint32(b, version)
	return append(b, key...)
}

// WrapZoneKey wraps name@version under a main key's public part with OAEP and hash h.
func WrapZoneKey(pub *rsa.PublicKey, h gocrypto.Hash, name string, version uint32, key []byte) ([]byte, error) {
	if len(key) != ZoneKeySize {
		return nil, fmt.Errorf("zone key %s@%d is %d bytes: %w", name, version, len(key), ErrFormat)
	}
	if err := checkKeyName(name); err != nil {
		return nil, err
	}
	pt := zoneKeyPlaintext(name, version, key)
	defer Zero(pt)
	out, err := rsa.EncryptOAEP(h.New(), rand.Reader, pub, pt, nil)
	if err != nil {
		return nil, fmt.Errorf("wrap %s@%d: %w", name, version, err)
	}
	return out, nil
}

// UnwrappedZoneKey checks that the RSA-decrypted plaintext is name@version and returns
// the key (a copy; the caller zeroes both).
func UnwrappedZoneKey(plain []byte, name string, version uint32) ([]byte, error) {
	want := zoneKeyPlaintext(name, version, nil)
	if len(plain) != len(want)+ZoneKeySize || !bytes.Equal(plain[:len(want)], want) {
		return nil, fmt.Errorf("unwrap %s@%d: plaintext is not bound to this key version: %w", name, version, ErrAuth)
	}
	return bytes.Clone(plain[len(want):]), nil
}

// Fingerprint is the SHA-256 of a public key's PKIX encoding, in hex.
func Fingerprint(pub *rsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}
