package crypto

import "testing"

// IntactSize runs at every open of a zone file: it must not allocate its two blocks of
// scratch (8 KiB an open, through the read callback). The one allocation left is the
// block's associated data (32 bytes), which escapes through the AEAD interface.
func TestIntactSizeAllocs(t *testing.T) {
	c := newCipher(t)
	plain := make([]byte, 100)
	sealed, err := c.SealBlock(nil, plain, 0)
	if err != nil {
		t.Fatal(err)
	}
	read := func(b []byte, off int64) error {
		copy(b, sealed[off-BlockOffset(0):])
		return nil
	}
	allocs := testing.AllocsPerRun(100, func() {
		if n, whole, err := c.IntactSize(read, int64(len(plain))); err != nil || !whole || n != int64(len(plain)) {
			t.Fatalf("IntactSize = %d, %v, %v", n, whole, err)
		}
	})
	if allocs > 1 {
		t.Errorf("IntactSize allocates %.0f times per call", allocs)
	}
}
