package fs

import (
	"math/bits"
	"testing"

	"github.com/ezfs/ezfs/crypto"
)

func TestBufClasses(t *testing.T) {
	if want := bits.Len(maxBufBlocks-1) + 1; bufClasses != want {
		t.Fatalf("bufClasses = %d, want %d", bufClasses, want)
	}
	for _, n := range []int{0, 1, bs, crypto.CipherBlockLen, crypto.CipherBlockLen + 1, 5 * crypto.CipherBlockLen,
		1 << 20, maxBufBlocks * crypto.CipherBlockLen, maxBufBlocks*crypto.CipherBlockLen + 1} {
		p := getBuf(n)
		if len(*p) != n {
			t.Errorf("getBuf(%d): length %d", n, len(*p))
		}
		c := bufClass(n)
		if c > 0 && n <= classCap(c-1) {
			t.Errorf("getBuf(%d): class %d, but class %d holds %d bytes", n, c, c-1, classCap(c-1))
		}
		putBuf(p)
	}
}

// A small read must not cost a 1 MiB buffer: the allocation a pool's refill makes is the
// class's size.
func TestGetBufSmall(t *testing.T) {
	p := getBuf(crypto.HeaderSize + crypto.CipherBlockLen)
	if cap(*p) > 2*crypto.CipherBlockLen {
		t.Errorf("a buffer for one block has capacity %d", cap(*p))
	}
	putBuf(p)
}
