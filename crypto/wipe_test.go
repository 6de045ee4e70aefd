package crypto

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"reflect"
	"testing"
	"unsafe"
)

// The standard library's AES and GCM state must stay pointer-free for Close to zero
// it; this test says when a Go release changes that.
func TestWipeKeySchedules(t *testing.T) {
	dek := bytes.Repeat([]byte{0xa5}, DEKSize)
	b, err := aes.NewCipher(dek)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []any{aead, b} {
		v := reflect.ValueOf(p)
		mem := unsafe.Slice((*byte)(v.UnsafePointer()), v.Type().Elem().Size())
		if allZero(mem) {
			t.Fatalf("%T: nothing to wipe", p)
		}
		if !wipe(p) {
			t.Fatalf("%T holds pointers: its key material is no longer zeroed", p)
		}
		if !allZero(mem) {
			t.Fatalf("%T: not zeroed", p)
		}
	}
	n := 1
	withPointer := &struct {
		p   *int
		key [8]byte
	}{&n, [8]byte{1}}
	if wipe(withPointer) || withPointer.p == nil || withPointer.key[0] != 1 {
		t.Fatal("a value with a pointer was wiped")
	}
	if wipe(nil) || wipe((*[4]byte)(nil)) || wipe([4]byte{}) {
		t.Fatal("wiped something not a pointer to a value")
	}
}

func TestContentCipherClose(t *testing.T) {
	c := newCipher(t)
	if c.aead != nil {
		t.Fatal("key schedule made before the first block")
	}
	if _, err := c.SealBlock(nil, []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	if !allZero(c.key[:]) {
		t.Fatal("the key copy outlived the key schedule made from it")
	}
	v := reflect.ValueOf(c.aead)
	mem := unsafe.Slice((*byte)(v.UnsafePointer()), v.Type().Elem().Size())
	c.Close()
	if c.aead != nil || !allZero(mem) {
		t.Fatal("Close left the key schedule")
	}
	c.Close() // twice is harmless
	if _, err := c.SealBlock(nil, []byte("x"), 0); err == nil {
		t.Fatal("a closed cipher sealed a block")
	}
	unused := newCipher(t)
	unused.Close()
	if !allZero(unused.key[:]) || unused.aead != nil {
		t.Fatal("Close of a cipher never used left its key")
	}
	if _, err := unused.OpenBlock(nil, make([]byte, CipherBlockLen), 0); err == nil {
		t.Fatal("a closed cipher opened a block")
	}
	var none *ContentCipher
	none.Close()
}

// A file created or opened and closed without a block read or written costs no key
// schedule: the cipher is one small allocation until its first block.
func TestContentCipherLazy(t *testing.T) {
	dek := make([]byte, DEKSize)
	var id FileID
	allocs := testing.AllocsPerRun(100, func() {
		c, err := NewContentCipher(dek, id)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	})
	if allocs > 1 {
		t.Fatalf("NewContentCipher+Close: %v allocations, want 1", allocs)
	}
}
