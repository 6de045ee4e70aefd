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
	v := reflect.ValueOf(c.aead)
	mem := unsafe.Slice((*byte)(v.UnsafePointer()), v.Type().Elem().Size())
	c.Close()
	if c.aead != nil || !allZero(mem) {
		t.Fatal("Close left the key schedule")
	}
	c.Close() // twice is harmless
	var none *ContentCipher
	none.Close()
}
