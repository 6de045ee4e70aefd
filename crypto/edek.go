package crypto

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"fmt"
)

// EDEK record, version 1, as stored in the xattr user.ezfs.edek:
//
//	magic "EZDK" ‖ version 1 ‖ algorithm 1 (AES-256-GCM) ‖ len(name) uint8 ‖ name ‖
//	key version uint32 BE ‖ file ID [16] ‖ nonce [12] ‖ sealed DEK (32 + 16 tag)
//
// The associated data of the seal is every byte before the nonce plus the zone ID, so a
// record cannot be edited, moved to another file, or carried into another zone.
const (
	edekVersion   = 1
	AlgAES256GCM  = 1
	MaxKeyNameLen = 128
	edekSealedLen = DEKSize + TagSize
)

var edekMagic = []byte("EZDK")

// ZoneID identifies a zone; it is bound into every EDEK of the zone.
type ZoneID [16]byte

// EDEK is a file's data key sealed under one zone key version.
type EDEK struct {
	KeyName    string
	KeyVersion uint32
	FileID     FileID
	nonce      [NonceSize]byte
	sealed     []byte
}

// SealDEK seals dek for the file id under zone key version keyName@keyVersion of zone.
func SealDEK(zoneKey []byte, zone ZoneID, keyName string, keyVersion uint32, id FileID, dek []byte) (*EDEK, error) {
	if len(dek) != DEKSize {
		return nil, fmt.Errorf("seal data key: %d bytes: %w", len(dek), ErrFormat)
	}
	if err := checkKeyName(keyName); err != nil {
		return nil, err
	}
	e := &EDEK{KeyName: keyName, KeyVersion: keyVersion, FileID: id}
	if _, err := rand.Read(e.nonce[:]); err != nil {
		return nil, err
	}
	aead, err := zoneAEAD(zoneKey)
	if err != nil {
		return nil, err
	}
	e.sealed = aead.Seal(nil, e.nonce[:], dek, e.ad(zone))
	return e, nil
}

// Open returns the data key. The caller zeroes it when done.
func (e *EDEK) Open(zoneKey []byte, zone ZoneID) ([]byte, error) {
	aead, err := zoneAEAD(zoneKey)
	if err != nil {
		return nil, err
	}
	dek, err := aead.Open(nil, e.nonce[:], e.sealed, e.ad(zone))
	if err != nil {
		return nil, fmt.Errorf("open data key under %s@%d: %w", e.KeyName, e.KeyVersion, ErrAuth)
	}
	return dek, nil
}

func (e *EDEK) prefix() []byte {
	b := make([]byte, 0, 64+len(e.KeyName))
	b = append(b, edekMagic...)
	b = append(b, edekVersion, AlgAES256GCM, byte(len(e.KeyName)))
	b = append(b, e.KeyName...)
	b = binary.BigEndian.AppendUint32(b, e.KeyVersion)
	return append(b, e.FileID[:]...)
}

func (e *EDEK) ad(zone ZoneID) []byte {
	return append(e.prefix(), zone[:]...)
}

// MarshalBinary encodes the record for the xattr.
func (e *EDEK) MarshalBinary() ([]byte, error) {
	b := e.prefix()
	b = append(b, e.nonce[:]...)
	return append(b, e.sealed...), nil
}

// ParseEDEK decodes an xattr value. It checks structure only; Open checks authenticity.
func ParseEDEK(b []byte) (*EDEK, error) {
	bad := func(why string) (*EDEK, error) {
		return nil, fmt.Errorf("EDEK record: %s: %w", why, ErrFormat)
	}
	if len(b) < 7 || !bytes.Equal(b[:4], edekMagic) {
		return bad("bad magic")
	}
	if b[4] != edekVersion {
		return bad(fmt.Sprintf("version %d", b[4]))
	}
	if b[5] != AlgAES256GCM {
		return bad(fmt.Sprintf("algorithm %d", b[5]))
	}
	n := int(b[6])
	rest := b[7:]
	if n == 0 || n > MaxKeyNameLen || len(rest) != n+4+FileIDSize+NonceSize+edekSealedLen {
		return bad("bad length")
	}
	e := &EDEK{KeyName: string(rest[:n])}
	rest = rest[n:]
	e.KeyVersion = binary.BigEndian.Uint32(rest)
	rest = rest[4:]
	copy(e.FileID[:], rest)
	rest = rest[FileIDSize:]
	copy(e.nonce[:], rest)
	e.sealed = bytes.Clone(rest[NonceSize:])
	if err := checkKeyName(e.KeyName); err != nil {
		return nil, err
	}
	return e, nil
}

func zoneAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != DEKSize {
		return nil, fmt.Errorf("zone key is %d bytes: %w", len(key), ErrFormat)
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// checkKeyName enforces the names a zone key may have: they appear in EDEKs, paths of
// logs and CLI output, so keep them short and printable.
func checkKeyName(name string) error {
	if name == "" || len(name) > MaxKeyNameLen {
		return fmt.Errorf("key name %q: must be 1 to %d characters: %w", name, MaxKeyNameLen, ErrFormat)
	}
	for _, r := range name {
		ok := r == '-' || r == '_' || r == '.' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
		if !ok {
			return fmt.Errorf("key name %q: only letters, digits, '-', '_' and '.' are allowed: %w", name, ErrFormat)
		}
	}
	return nil
}

// CheckKeyName reports whether name is acceptable as a zone key name.
func CheckKeyName(name string) error { return checkKeyName(name) }
