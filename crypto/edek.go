package crypto

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// The EDEK record, a file's data key sealed under one zone key version, as stored in
// the xattr user.ezfs.edek. Formats are versioned and frozen: every format ever written
// keeps opening (testdata/ holds a golden fixture of each); new records are
// EDEKCurrent.
//
// Version 1 (2026-11-24 to 2026-12-01; 87 bytes plus the key name):
//
//	magic "EZDK" ‖ version 1 ‖ algorithm 1 (AES-256-GCM) ‖ len(name) uint8 ‖ name ‖
//	key version uint32 BE ‖ file ID [16] ‖ nonce [12] ‖ sealed DEK (32 + 16 tag)
//
// The associated data of the seal is every byte before the nonce plus the zone ID, so a
// record cannot be edited, moved to another file, or carried into another zone.
//
// Version 2 (58 to 60 bytes: it stays inside a default ext4 inode, whose in-inode
// space holds a 60-byte value under this name):
//
//	0x02 ‖ key version (uvarint, at most 3 bytes) ‖ file ID [16] ‖ wrapped DEK [40]
//
// The DEK is wrapped with AES key wrap (RFC 3394, WrapKey) under a key of its own for
// the record, HKDF-SHA256 of the zone key version with the info of edekV2Info: format,
// zone ID, key name, key version and file ID. A changed byte, or a record moved to
// another file, zone, key or version, unwraps under another key and fails the wrap's
// integrity check. The key name is not in the record: it is the zone's (marker and
// keystore), so opening one needs it.
const (
	EDEKv1      = 1
	EDEKv2      = 2
	EDEKCurrent = EDEKv2

	AlgAES256GCM  = 1
	MaxKeyNameLen = 128
	edekSealedLen = DEKSize + TagSize

	// MaxEDEKv2Version is the largest key version a v2 record holds (3 uvarint
	// bytes), so that the record is at most MaxEDEKv2Len bytes.
	MaxEDEKv2Version = 1<<21 - 1
	MaxEDEKv2Len     = 1 + 3 + FileIDSize + edekWrappedLen
	edekWrappedLen   = DEKSize + 8
)

var edekMagic = []byte("EZDK")

// edekV2Label starts the HKDF info of a v2 record.
const edekV2Label = "ezfs EDEK v2 wrapping key"

// ZoneID identifies a zone; it is bound into every EDEK of the zone.
type ZoneID [16]byte

// EDEK is a file's data key sealed under one zone key version.
type EDEK struct {
	// Format is the record's format version, EDEKv1 or EDEKv2.
	Format int
	// KeyName is the zone key's name a v1 record carries; "" in a v2 record, whose
	// key is its zone's (see KeyNameIn).
	KeyName    string
	KeyVersion uint32
	FileID     FileID
	nonce      [NonceSize]byte      // v1
	sealed     []byte               // v1: the AES-GCM seal
	wrapped    [edekWrappedLen]byte // v2: the wrapped DEK
}

// SealDEK seals dek for the file id under zone key version keyName@keyVersion of zone,
// in the current format.
func SealDEK(zoneKey []byte, zone ZoneID, keyName string, keyVersion uint32, id FileID, dek []byte) (*EDEK, error) {
	return SealDEKFormat(EDEKCurrent, zoneKey, zone, keyName, keyVersion, id, dek)
}

// SealDEKFormat is SealDEK in record format version format. Only tests and fixtures
// write an old format.
func SealDEKFormat(format int, zoneKey []byte, zone ZoneID, keyName string, keyVersion uint32, id FileID, dek []byte) (*EDEK, error) {
	if len(dek) != DEKSize {
		return nil, fmt.Errorf("seal data key: %d bytes: %w", len(dek), ErrFormat)
	}
	if err := checkKeyName(keyName); err != nil {
		return nil, err
	}
	switch format {
	case EDEKv1:
		e := &EDEK{Format: EDEKv1, KeyName: keyName, KeyVersion: keyVersion, FileID: id}
		if _, err := rand.Read(e.nonce[:]); err != nil {
			return nil, err
		}
		aead, err := zoneAEAD(zoneKey)
		if err != nil {
			return nil, err
		}
		e.sealed = aead.Seal(nil, e.nonce[:], dek, e.ad(zone))
		return e, nil
	case EDEKv2:
		if keyVersion > MaxEDEKv2Version {
			return nil, fmt.Errorf("seal data key: key version %d does not fit a v2 record: %w", keyVersion, ErrFormat)
		}
		e := &EDEK{Format: EDEKv2, KeyVersion: keyVersion, FileID: id}
		kek, err := e.wrappingKey(zoneKey, zone, keyName)
		if err != nil {
			return nil, err
		}
		defer clear(kek[:])
		w, err := WrapKey(kek[:], dek)
		if err != nil {
			return nil, err
		}
		copy(e.wrapped[:], w)
		return e, nil
	}
	return nil, fmt.Errorf("seal data key: EDEK format %d: %w", format, ErrFormat)
}

// KeyNameIn returns the name of the zone key the record is sealed under, for a record
// of a file in a zone whose key is zoneKey: a v1 record names its own.
func (e *EDEK) KeyNameIn(zoneKey string) string {
	if e.Format == EDEKv1 {
		return e.KeyName
	}
	return zoneKey
}

// Open returns the data key. zoneKey is version e.KeyVersion of the zone key named
// keyName (KeyNameIn), of zone. The caller zeroes the result.
func (e *EDEK) Open(zoneKey []byte, zone ZoneID, keyName string) ([]byte, error) {
	switch e.Format {
	case EDEKv1:
		if keyName != e.KeyName {
			return nil, fmt.Errorf("open data key: the record is under key %s, not %s: %w", e.KeyName, keyName, ErrAuth)
		}
		aead, err := zoneAEAD(zoneKey)
		if err != nil {
			return nil, err
		}
		dek, err := aead.Open(nil, e.nonce[:], e.sealed, e.ad(zone))
		if err != nil {
			return nil, fmt.Errorf("open data key under %s@%d: %w", e.KeyName, e.KeyVersion, ErrAuth)
		}
		return dek, nil
	case EDEKv2:
		kek, err := e.wrappingKey(zoneKey, zone, keyName)
		if err != nil {
			return nil, err
		}
		b, err := aes.NewCipher(kek[:])
		clear(kek[:])
		if err != nil {
			return nil, err
		}
		dek := make([]byte, DEKSize+kwScratch)
		if err := unwrapInto(b, e.wrapped[:], dek); err != nil {
			return nil, fmt.Errorf("open data key under %s@%d: %w", keyName, e.KeyVersion, ErrAuth)
		}
		return dek[:DEKSize:DEKSize], nil
	}
	return nil, fmt.Errorf("open data key: EDEK format %d: %w", e.Format, ErrFormat)
}

// appendEDEKv2Info appends the HKDF info of a v2 record's wrapping key:
//
//	"ezfs EDEK v2 wrapping key" ‖ format 2 ‖ zone ID [16] ‖ len(name) uint8 ‖ name ‖
//	key version uint32 BE ‖ file ID [16]
func appendEDEKv2Info(b []byte, zone ZoneID, keyName string, keyVersion uint32, id FileID) []byte {
	b = append(b, edekV2Label...)
	b = append(b, EDEKv2)
	b = append(b, zone[:]...)
	b = append(b, byte(len(keyName)))
	b = append(b, keyName...)
	b = binary.BigEndian.AppendUint32(b, keyVersion)
	return append(b, id[:]...)
}

// maxEDEKv2Info is the longest info: a key name of MaxKeyNameLen.
const maxEDEKv2Info = len(edekV2Label) + 1 + 16 + 1 + MaxKeyNameLen + 4 + FileIDSize

// wrappingKey derives the record's key-wrapping key from the zone key version:
// HKDF-Expand with SHA-256 (RFC 5869 §2.3) for 32 bytes, T(1) = HMAC-SHA256(zone key,
// info ‖ 0x01). The zone key version is the PRK: it is 32 uniformly random bytes, as
// strong as Extract's output, so the extract step is left out (RFC 5869 §3.3). HMAC is
// written out on sha256.Sum256, in buffers on the stack: crypto/hkdf's allocations
// alone cost more than a v1 record's whole AES-GCM open. TestHKDFExpand checks it
// against crypto/hkdf and RFC 5869.
func (e *EDEK) wrappingKey(zoneKey []byte, zone ZoneID, keyName string) ([32]byte, error) {
	if len(zoneKey) != DEKSize {
		return [32]byte{}, fmt.Errorf("zone key is %d bytes: %w", len(zoneKey), ErrFormat)
	}
	if keyName == "" || len(keyName) > MaxKeyNameLen {
		return [32]byte{}, checkKeyName(keyName) // SealDEKFormat checked the rest
	}
	var inner [sha256.BlockSize + maxEDEKv2Info + 1]byte
	copy(inner[:], zoneKey)
	msg := appendEDEKv2Info(inner[:sha256.BlockSize], zone, keyName, e.KeyVersion, e.FileID)
	return hmacExpand(&inner, len(msg)-sha256.BlockSize), nil
}

// hmacExpand computes HMAC-SHA256(key, info ‖ 0x01), where inner holds the key
// (zero-padded to a block) followed by infoLen bytes of info; it zeroes inner.
func hmacExpand(inner *[sha256.BlockSize + maxEDEKv2Info + 1]byte, infoLen int) [32]byte {
	var outer [sha256.BlockSize + sha256.Size]byte
	copy(outer[:sha256.BlockSize], inner[:sha256.BlockSize])
	for i := 0; i < sha256.BlockSize; i++ {
		inner[i] ^= 0x36
		outer[i] ^= 0x5c
	}
	n := sha256.BlockSize + infoLen
	inner[n] = 1
	ih := sha256.Sum256(inner[:n+1])
	copy(outer[sha256.BlockSize:], ih[:])
	out := sha256.Sum256(outer[:])
	clear(inner[:])
	clear(outer[:])
	clear(ih[:])
	return out
}

func (e *EDEK) prefix() []byte {
	b := make([]byte, 0, 64+len(e.KeyName))
	b = append(b, edekMagic...)
	b = append(b, EDEKv1, AlgAES256GCM, byte(len(e.KeyName)))
	b = append(b, e.KeyName...)
	b = binary.BigEndian.AppendUint32(b, e.KeyVersion)
	return append(b, e.FileID[:]...)
}

func (e *EDEK) ad(zone ZoneID) []byte {
	return append(e.prefix(), zone[:]...)
}

// MarshalBinary encodes the record for the xattr, in its own format.
func (e *EDEK) MarshalBinary() ([]byte, error) {
	switch e.Format {
	case EDEKv1:
		b := e.prefix()
		b = append(b, e.nonce[:]...)
		return append(b, e.sealed...), nil
	case EDEKv2:
		b := make([]byte, 0, MaxEDEKv2Len)
		b = append(b, EDEKv2)
		b = binary.AppendUvarint(b, uint64(e.KeyVersion))
		b = append(b, e.FileID[:]...)
		return append(b, e.wrapped[:]...), nil
	}
	return nil, fmt.Errorf("EDEK format %d: %w", e.Format, ErrFormat)
}

// ParseEDEK decodes an xattr value of any known format. It checks structure only;
// Open checks authenticity. Anything else is ErrFormat.
func ParseEDEK(b []byte) (*EDEK, error) {
	if len(b) > 0 && b[0] == EDEKv2 {
		return parseEDEKv2(b)
	}
	return parseEDEKv1(b)
}

func badEDEK(why string) (*EDEK, error) {
	return nil, fmt.Errorf("EDEK record: %s: %w", why, ErrFormat)
}

func parseEDEKv2(b []byte) (*EDEK, error) {
	v, n := binary.Uvarint(b[1:])
	switch {
	case n <= 0 || n > 3 || v > MaxEDEKv2Version:
		return badEDEK("v2: bad key version")
	case n > 1 && b[n] == 0: // a longer form ends in a zero byte
		return badEDEK("v2: key version not in its shortest form")
	}
	rest := b[1+n:]
	if len(rest) != FileIDSize+edekWrappedLen {
		return badEDEK("v2: bad length")
	}
	e := &EDEK{Format: EDEKv2, KeyVersion: uint32(v)}
	copy(e.FileID[:], rest)
	copy(e.wrapped[:], rest[FileIDSize:])
	return e, nil
}

func parseEDEKv1(b []byte) (*EDEK, error) {
	if len(b) < 7 || !bytes.Equal(b[:4], edekMagic) {
		return badEDEK("bad magic")
	}
	if b[4] != EDEKv1 {
		return badEDEK(fmt.Sprintf("version %d", b[4]))
	}
	if b[5] != AlgAES256GCM {
		return badEDEK(fmt.Sprintf("algorithm %d", b[5]))
	}
	n := int(b[6])
	rest := b[7:]
	if n == 0 || n > MaxKeyNameLen || len(rest) != n+4+FileIDSize+NonceSize+edekSealedLen {
		return badEDEK("bad length")
	}
	e := &EDEK{Format: EDEKv1, KeyName: string(rest[:n])}
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
