package crypto

import (
	"bytes"
	"crypto/aes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
)

// The RFC 3394 §4 test vectors: KEK 000102…, key data 00112233445566778899AABBCCDDEEFF
// 0001…, cut to the sizes of each section.
func TestKeyWrapRFC3394(t *testing.T) {
	kek := unhex(t, "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F")
	data := unhex(t, "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F")
	for _, v := range []struct {
		section        string
		kekLen, keyLen int
		wrapped        string
	}{
		{"4.1", 16, 16, "1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5"},
		{"4.2", 24, 16, "96778B25AE6CA435F92B5B97C050AED2468AB8A17AD84E5D"},
		{"4.3", 32, 16, "64E8C3F9CE0F5BA263E9777905818A2A93C8191E7D6E8AE7"},
		{"4.4", 24, 24, "031D33264E15D33268F24EC260743EDCE1C6C7DDEE725A936BA814915C6762D2"},
		{"4.5", 32, 24, "A8F9BC1612C68B3FF6E6F4FBE30E71E4769C8B80A32CB8958CD5D17D6B254DA1"},
		{"4.6", 32, 32, "28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21"},
	} {
		k, p, want := kek[:v.kekLen], data[:v.keyLen], unhex(t, v.wrapped)
		got, err := WrapKey(k, p)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("RFC 3394 §%s: wrap = %X, %v; want %X", v.section, got, err, want)
		}
		back, err := UnwrapKey(k, want)
		if err != nil || !bytes.Equal(back, p) {
			t.Errorf("RFC 3394 §%s: unwrap = %X, %v; want %X", v.section, back, err, p)
		}
		for i := range want {
			c := bytes.Clone(want)
			c[i] ^= 0x01
			if _, err := UnwrapKey(k, c); !errors.Is(err, ErrAuth) {
				t.Errorf("RFC 3394 §%s: byte %d flipped: %v, want ErrAuth", v.section, i, err)
			}
		}
		other := bytes.Clone(k)
		other[0] ^= 0x80
		if _, err := UnwrapKey(other, want); !errors.Is(err, ErrAuth) {
			t.Errorf("RFC 3394 §%s: another KEK: %v, want ErrAuth", v.section, err)
		}
	}
	for _, n := range []int{0, 8, 17, 33} {
		if _, err := WrapKey(kek, make([]byte, n)); !errors.Is(err, ErrFormat) {
			t.Errorf("wrap %d bytes: %v, want ErrFormat", n, err)
		}
	}
	for _, n := range []int{0, 8, 16, 41} {
		if _, err := UnwrapKey(kek, make([]byte, n)); !errors.Is(err, ErrFormat) {
			t.Errorf("unwrap %d bytes: %v, want ErrFormat", n, err)
		}
	}
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type edekCase struct {
	zk, dek []byte
	zone    ZoneID
	name    string
	version uint32
	id      FileID
}

func newEDEKCase(t testing.TB) edekCase {
	zk, _ := NewZoneKey()
	dek, _ := NewDEK()
	id, _ := NewFileID()
	return edekCase{zk: zk, dek: dek, zone: ZoneID{1, 2, 3}, name: "finance", version: 7, id: id}
}

func (c edekCase) seal(t testing.TB, format int) []byte {
	t.Helper()
	e, err := SealDEKFormat(format, c.zk, c.zone, c.name, c.version, c.id, c.dek)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := e.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestEDEKRoundTrip(t *testing.T) {
	c := newEDEKCase(t)
	for _, format := range []int{EDEKv1, EDEKv2} {
		raw := c.seal(t, format)
		p, err := ParseEDEK(raw)
		if err != nil {
			t.Fatalf("v%d: %v", format, err)
		}
		if p.Format != format || p.KeyVersion != c.version || p.FileID != c.id || p.KeyNameIn(c.name) != c.name {
			t.Fatalf("v%d: parsed %+v", format, p)
		}
		if again, _ := p.MarshalBinary(); !bytes.Equal(again, raw) {
			t.Errorf("v%d: marshal of the parsed record differs", format)
		}
		got, err := p.Open(c.zk, c.zone, c.name)
		if err != nil || !bytes.Equal(got, c.dek) {
			t.Fatalf("v%d: open: %v", format, err)
		}
	}
	e, _ := SealDEK(c.zk, c.zone, c.name, c.version, c.id, c.dek)
	if e.Format != EDEKCurrent || EDEKCurrent != EDEKv2 || e.KeyName != "" {
		t.Errorf("SealDEK writes format %d (name %q), want v2 without a name", e.Format, e.KeyName)
	}
}

// A v2 record is at most 60 bytes, the most a default ext4 inode holds for this name.
func TestEDEKv2Size(t *testing.T) {
	c := newEDEKCase(t)
	for version, want := range map[uint32]int{1: 58, 127: 58, 128: 59, 1<<14 - 1: 59, 1 << 14: 60, MaxEDEKv2Version: 60} {
		c.version = version
		c.name = "a-key-name-of-the-longest-kind-" + string(bytes.Repeat([]byte("x"), 97)) // 128
		if raw := c.seal(t, EDEKv2); len(raw) != want || len(raw) > MaxEDEKv2Len || MaxEDEKv2Len != 60 {
			t.Errorf("version %d: %d bytes, want %d", version, len(raw), want)
		}
	}
	if _, err := SealDEKFormat(EDEKv2, c.zk, c.zone, c.name, MaxEDEKv2Version+1, c.id, c.dek); !errors.Is(err, ErrFormat) {
		t.Errorf("version past the v2 range: %v, want ErrFormat", err)
	}
}

// Every byte of a record changed, in each format: it fails to parse (ErrFormat) or to
// open (ErrAuth), never opens.
func TestEDEKTamper(t *testing.T) {
	c := newEDEKCase(t)
	for _, format := range []int{EDEKv1, EDEKv2} {
		raw := c.seal(t, format)
		for i := range raw {
			for _, bit := range []byte{0x01, 0x40, 0x80} {
				b := bytes.Clone(raw)
				b[i] ^= bit
				q, err := ParseEDEK(b)
				if err != nil {
					if !errors.Is(err, ErrFormat) {
						t.Errorf("v%d byte %d ^%#x: parse: %v, want ErrFormat", format, i, bit, err)
					}
					continue
				}
				if _, err := q.Open(c.zk, c.zone, q.KeyNameIn(c.name)); !errors.Is(err, ErrAuth) {
					t.Errorf("v%d byte %d ^%#x: open: %v, want ErrAuth", format, i, bit, err)
				}
			}
		}
		for _, cut := range [][]byte{raw[:len(raw)-1], append(bytes.Clone(raw), 0)} {
			if _, err := ParseEDEK(cut); !errors.Is(err, ErrFormat) {
				t.Errorf("v%d, %d bytes: %v, want ErrFormat", format, len(cut), err)
			}
		}
	}
}

// A record moved to another file, zone, key version or key name does not open.
func TestEDEKMoved(t *testing.T) {
	c := newEDEKCase(t)
	other := newEDEKCase(t)
	for _, format := range []int{EDEKv1, EDEKv2} {
		raw := c.seal(t, format)
		open := func(mutate func(e *EDEK), zk []byte, zone ZoneID, name string) error {
			e, err := ParseEDEK(raw)
			if err != nil {
				t.Fatal(err)
			}
			mutate(e)
			_, err = e.Open(zk, zone, name)
			return err
		}
		same := func(*EDEK) {}
		for what, err := range map[string]error{
			"another zone":           open(same, c.zk, ZoneID{9}, c.name),
			"another key name":       open(same, c.zk, c.zone, "payroll"),
			"another key version":    open(same, other.zk, c.zone, c.name),
			"another file":           open(func(e *EDEK) { e.FileID = other.id }, c.zk, c.zone, c.name),
			"another version number": open(func(e *EDEK) { e.KeyVersion++ }, c.zk, c.zone, c.name),
		} {
			if !errors.Is(err, ErrAuth) {
				t.Errorf("v%d, %s: %v, want ErrAuth", format, what, err)
			}
		}
	}
	// The same wrapped DEK under another record prefix: the v2 wrap of file A carried
	// into the record of file B, byte for byte.
	a, b := c.seal(t, EDEKv2), other.seal(t, EDEKv2)
	copy(b[len(b)-edekWrappedLen:], a[len(a)-edekWrappedLen:])
	e, err := ParseEDEK(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Open(c.zk, c.zone, c.name); !errors.Is(err, ErrAuth) {
		t.Errorf("wrapped DEK moved into another file's record: %v, want ErrAuth", err)
	}
}

// Records of no known format are ErrFormat.
func TestEDEKFormats(t *testing.T) {
	c := newEDEKCase(t)
	v2 := c.seal(t, EDEKv2)
	long := append([]byte{EDEKv2, 0x81, 0x00}, v2[2:]...) // version 1 in two bytes
	bad := map[string][]byte{
		"empty":                 {},
		"format 0":              append([]byte{0}, v2[1:]...),
		"format 3":              append([]byte{3}, v2[1:]...),
		"v2 version 4 bytes":    append([]byte{EDEKv2, 0x80, 0x80, 0x80, 0x01}, v2[2:]...),
		"v2 version not short":  long,
		"v2 only a format byte": {EDEKv2},
		"v1 magic only":         []byte("EZDK"),
		"v1 format 2":           append([]byte("EZDK\x02\x01"), c.seal(t, EDEKv1)[6:]...),
	}
	for what, b := range bad {
		if _, err := ParseEDEK(b); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: %v, want ErrFormat", what, err)
		}
	}
	if _, err := SealDEKFormat(3, c.zk, c.zone, c.name, 1, c.id, c.dek); !errors.Is(err, ErrFormat) {
		t.Errorf("seal format 3: %v, want ErrFormat", err)
	}
}

func FuzzParseEDEK(f *testing.F) {
	zk := make([]byte, 32)
	for _, format := range []int{EDEKv1, EDEKv2} {
		for _, version := range []uint32{1, 200, 1 << 20} {
			e, _ := SealDEKFormat(format, zk, ZoneID{}, "key", version, FileID{}, make([]byte, 32))
			raw, _ := e.MarshalBinary()
			f.Add(raw)
		}
	}
	f.Add([]byte("EZDK"))
	f.Add([]byte{EDEKv2})
	f.Add([]byte{EDEKv2, 0x81, 0x00})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseEDEK(b)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("parse error %v is not ErrFormat", err)
			}
			return
		}
		if e.Format == EDEKv2 && len(b) > MaxEDEKv2Len {
			t.Fatalf("a v2 record of %d bytes parsed", len(b))
		}
		out, err := e.MarshalBinary()
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("parse/marshal not inverse")
		}
		if dek, err := e.Open(zk, ZoneID{}, e.KeyNameIn("key")); err == nil && len(dek) != DEKSize {
			t.Fatalf("opened to %d bytes", len(dek))
		}
	})
}

// BenchmarkOpenEDEK is what a first open of a zone file costs in crypto: parse the
// record, open the DEK with the (cached) zone key version.
func BenchmarkOpenEDEK(b *testing.B) {
	for _, format := range []int{EDEKv1, EDEKv2} {
		b.Run(fmt.Sprintf("v%d", format), func(b *testing.B) {
			zk, _ := NewZoneKey()
			dek, _ := NewDEK()
			e, _ := SealDEKFormat(format, zk, ZoneID{1}, "bench", 1, FileID{2}, dek)
			raw, _ := e.MarshalBinary()
			b.ReportAllocs()
			for b.Loop() {
				p, err := ParseEDEK(raw)
				if err != nil {
					b.Fatal(err)
				}
				d, err := p.Open(zk, ZoneID{1}, "bench")
				if err != nil {
					b.Fatal(err)
				}
				Zero(d)
			}
		})
	}
}

// BenchmarkOpenEDEKv2Steps splits a v2 open into its steps, to show where its time
// goes: the HKDF-SHA256 derivation of the record's wrapping key (five SHA-256 blocks),
// the AES-256 key schedule of that key, and the unwrap (RFC 3394: 24 AES decryptions,
// each needing the one before). The last two alone cost what a whole v1 open does.
func BenchmarkOpenEDEKv2Steps(b *testing.B) {
	c := newEDEKCase(b)
	raw := c.seal(b, EDEKv2)
	e, err := ParseEDEK(raw)
	if err != nil {
		b.Fatal(err)
	}
	kek, _ := e.wrappingKey(c.zk, c.zone, c.name)
	block, _ := aes.NewCipher(kek[:])
	out := make([]byte, DEKSize+kwScratch)
	steps := map[string]func() error{
		"parse":    func() error { _, err := ParseEDEK(raw); return err },
		"derive":   func() error { _, err := e.wrappingKey(c.zk, c.zone, c.name); return err },
		"schedule": func() error { _, err := aes.NewCipher(kek[:]); return err },
		"unwrap":   func() error { return unwrapInto(block, e.wrapped[:], out) },
	}
	for _, name := range []string{"parse", "derive", "schedule", "unwrap"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := steps[name](); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSealEDEK is what a create costs in crypto.
func BenchmarkSealEDEK(b *testing.B) {
	for _, format := range []int{EDEKv1, EDEKv2} {
		b.Run(fmt.Sprintf("v%d", format), func(b *testing.B) {
			zk, _ := NewZoneKey()
			dek, _ := NewDEK()
			b.ReportAllocs()
			for b.Loop() {
				e, err := SealDEKFormat(format, zk, ZoneID{1}, "bench", 1, FileID{2}, dek)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := e.MarshalBinary(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// hkdfExpand32 is HKDF-Expand-SHA256 of 32 bytes for a prk of at most one block and
// an info of at most maxEDEKv2Info bytes (wrappingKey's code, for the tests).
func hkdfExpand32(prk []byte, info []byte) [32]byte {
	var inner [sha256.BlockSize + maxEDEKv2Info + 1]byte
	copy(inner[:], prk)
	copy(inner[sha256.BlockSize:], info)
	return hmacExpand(&inner, len(info))
}

// wrappingKey's HKDF-Expand: RFC 5869's test case 1 (its first 32 bytes of OKM, from
// the PRK), and crypto/hkdf on random keys and infos of every length a record uses.
func TestHKDFExpand(t *testing.T) {
	prk := unhex(t, "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
	info := unhex(t, "f0f1f2f3f4f5f6f7f8f9")
	want := unhex(t, "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf")
	if got := hkdfExpand32(prk, info); !bytes.Equal(got[:], want) {
		t.Errorf("RFC 5869 A.1: %x, want %x", got, want)
	}
	for n := 0; n <= maxEDEKv2Info; n++ {
		key, _ := NewZoneKey()
		info := bytes.Repeat([]byte{byte(n)}, n)
		want, err := hkdf.Expand(sha256.New, key, string(info), 32)
		if err != nil {
			t.Fatal(err)
		}
		if got := hkdfExpand32(key, info); !bytes.Equal(got[:], want) {
			t.Fatalf("info of %d bytes: %x, crypto/hkdf says %x", n, got, want)
		}
	}
}
