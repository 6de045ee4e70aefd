package crypto

import (
	"bytes"
	gocrypto "crypto"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"testing"
)

func TestSizes(t *testing.T) {
	for _, plain := range []int64{0, 1, 100, BlockSize - 1, BlockSize, BlockSize + 1, 10*BlockSize + 7, 64 << 20} {
		back := BackingSize(plain)
		got, err := PlainSize(back)
		if err != nil || got != plain {
			t.Errorf("PlainSize(BackingSize(%d)=%d) = %d, %v", plain, back, got, err)
		}
	}
	for _, bad := range []int64{1, HeaderSize - 1, HeaderSize + 1, HeaderSize + BlockOverhead, HeaderSize + CipherBlockLen + 5} {
		if _, err := PlainSize(bad); !errors.Is(err, ErrFormat) {
			t.Errorf("PlainSize(%d): err %v, want ErrFormat", bad, err)
		}
	}
}

func newCipher(t testing.TB) *ContentCipher {
	dek, _ := NewDEK()
	id, _ := NewFileID()
	c, err := NewContentCipher(dek, id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestBlockRoundTripAndBinding(t *testing.T) {
	c := newCipher(t)
	plain := bytes.Repeat([]byte("ezfs"), 1000)
	sealed, err := c.SealBlock(nil, plain, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(sealed) != len(plain)+BlockOverhead {
		t.Fatalf("sealed length %d", len(sealed))
	}
	got, err := c.OpenBlock(nil, sealed, 3)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("open: %v", err)
	}
	other := newCipher(t)
	cases := map[string]func() ([]byte, error){
		"other block number": func() ([]byte, error) { return c.OpenBlock(nil, sealed, 4) },
		"other file":         func() ([]byte, error) { return other.OpenBlock(nil, sealed, 3) },
		"flipped byte": func() ([]byte, error) {
			s := bytes.Clone(sealed)
			s[100] ^= 1
			return c.OpenBlock(nil, s, 3)
		},
	}
	for name, f := range cases {
		if _, err := f(); !errors.Is(err, ErrAuth) {
			t.Errorf("%s: err %v, want ErrAuth", name, err)
		}
	}
	hole := make([]byte, CipherBlockLen)
	if z, err := c.OpenBlock(nil, hole, 0); err != nil || !bytes.Equal(z, make([]byte, BlockSize)) {
		t.Errorf("hole block: %v", err)
	}
	if _, err := c.OpenBlock(nil, make([]byte, 100), 0); !errors.Is(err, ErrAuth) {
		t.Errorf("short zero block must not be a hole: %v", err)
	}
}

func TestHeader(t *testing.T) {
	id, _ := NewFileID()
	h := Header(id)
	if err := CheckHeader(h, id); err != nil {
		t.Fatal(err)
	}
	other, _ := NewFileID()
	if err := CheckHeader(h, other); !errors.Is(err, ErrAuth) {
		t.Errorf("other id: %v", err)
	}
	h[0] ^= 1
	if err := CheckHeader(h, id); !errors.Is(err, ErrFormat) {
		t.Errorf("bad magic: %v", err)
	}
}

// TestTornHeader: a file shorter than the header is a torn write only when its bytes
// are a strict prefix of the header its EDEK's file ID gives.
func TestTornHeader(t *testing.T) {
	id, other := FileID{1, 2, 3}, FileID{9, 9, 9}
	h, ho := Header(id), Header(other)
	junk := append([]byte("EZFX"), h[4:]...)
	cases := []struct {
		name string
		b    []byte
		want error // nil: torn
	}{
		{"1 byte", h[:1], nil},
		{"magic and version", h[:6], nil},
		{"all but one byte", h[:HeaderSize-1], nil},
		{"another file's header cut short", ho[:HeaderSize-1], ErrAuth},
		{"not a header", []byte("hello"), ErrFormat},
		{"bad magic", junk[:10], ErrFormat},
		{"no byte", nil, ErrFormat},
		{"a whole header", h, ErrFormat},
	}
	for _, c := range cases {
		err := CheckTornHeader(c.b, id)
		if (c.want == nil) != (err == nil) || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

func TestZoneKeyWrap(t *testing.T) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	zk, _ := NewZoneKey()
	for _, h := range []gocrypto.Hash{gocrypto.SHA256, gocrypto.SHA1} {
		w, err := WrapZoneKey(&priv.PublicKey, h, "k", 2, zk)
		if err != nil {
			t.Fatal(err)
		}
		pt, err := rsa.DecryptOAEP(h.New(), nil, priv, w, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := UnwrappedZoneKey(pt, "k", 2)
		if err != nil || !bytes.Equal(got, zk) {
			t.Fatalf("unwrap: %v", err)
		}
		if _, err := UnwrappedZoneKey(pt, "k", 3); !errors.Is(err, ErrAuth) {
			t.Errorf("wrong version accepted: %v", err)
		}
		if _, err := UnwrappedZoneKey(pt, "j", 2); !errors.Is(err, ErrAuth) {
			t.Errorf("wrong name accepted: %v", err)
		}
	}
}

func TestSealSecret(t *testing.T) {
	kdf, _ := DefaultKDF()
	kdf.MemoryKiB = 1024 // keep the unit test fast; the parameters are stored per secret
	s, err := SealSecret([]byte("private"), []byte("pass"), "main v1", kdf)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Open([]byte("pass"), "main v1"); err != nil || string(got) != "private" {
		t.Fatalf("open: %q %v", got, err)
	}
	if _, err := s.Open([]byte("wrong"), "main v1"); !errors.Is(err, ErrAuth) {
		t.Errorf("wrong passphrase: %v", err)
	}
	if _, err := s.Open([]byte("pass"), "main v2"); !errors.Is(err, ErrAuth) {
		t.Errorf("wrong context: %v", err)
	}
}

func BenchmarkSealBlock(b *testing.B) {
	c := newCipher(b)
	plain := make([]byte, BlockSize)
	dst := make([]byte, 0, CipherBlockLen)
	b.SetBytes(BlockSize)
	for i := 0; i < b.N; i++ {
		_, _ = c.SealBlock(dst[:0], plain, int64(i))
	}
}

func BenchmarkOpenBlock(b *testing.B) {
	c := newCipher(b)
	sealed, _ := c.SealBlock(nil, make([]byte, BlockSize), 1)
	dst := make([]byte, 0, BlockSize)
	b.SetBytes(BlockSize)
	for i := 0; i < b.N; i++ {
		if _, err := c.OpenBlock(dst[:0], sealed, 1); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSizes(b *testing.B) {
	var sink int64
	for i := 0; i < b.N; i++ {
		n, _ := PlainSize(BackingSize(int64(i)))
		sink += n + BlockOffset(int64(i))
	}
	_ = sink
}
