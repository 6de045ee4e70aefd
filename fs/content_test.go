package fs

import (
	"bytes"
	crand "crypto/rand"
	"log"
	"math/rand"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/ezfs/ezfs/backing"
	"github.com/ezfs/ezfs/crypto"
)

// newTestNode returns the state of a node whose content functions work on a temporary
// file, without a mount, and the plain reference file to compare it with.
func newTestNode(t testing.TB) (*state, int, *os.File) {
	t.Helper()
	dir := t.TempDir()
	fd, err := syscall.Open(filepath.Join(dir, "enc"), syscall.O_RDWR|syscall.O_CREAT, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	ref, err := os.Create(filepath.Join(dir, "ref"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ref.Close() })
	dek, _ := crypto.NewDEK()
	id, _ := crypto.NewFileID()
	cc, err := crypto.NewContentCipher(dek, id)
	if err != nil {
		t.Fatal(err)
	}
	n := &state{node: &node{}, cc: cc, sizeKnown: true}
	// The node is the root of its own file system, so that n.path() names its file.
	n.fsys = &FS{root: &backing.Root{Path: filepath.Join(dir, "enc")}, log: log.New(new(bytes.Buffer), "", 0), top: n.node}
	return n, fd, ref
}

func checkSame(t *testing.T, step int, n *state, fd int, ref *os.File) {
	t.Helper()
	want, err := os.ReadFile(ref.Name())
	if err != nil {
		t.Fatal(err)
	}
	if n.size != int64(len(want)) {
		t.Fatalf("step %d: size %d, want %d", step, n.size, len(want))
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != crypto.BackingSize(n.size) {
		t.Fatalf("step %d: backing size %d, want %d for %d plaintext bytes", step, st.Size, crypto.BackingSize(n.size), n.size)
	}
	got := make([]byte, len(want)+100)
	k, err := n.readLocked(fd, got, 0)
	if err != nil {
		t.Fatalf("step %d: read: %v", step, err)
	}
	if !bytes.Equal(got[:k], want) {
		t.Fatalf("step %d: contents differ", step)
	}
	// Windows: block-aligned (decrypted straight into the buffer) and not, inside the
	// file and across its end.
	size := int64(len(want))
	for _, w := range []struct{ off, n int64 }{
		{0, bs}, {bs, 3 * bs}, {bs, bs + 7}, {0, 100}, {size / bs * bs, 2 * bs}, {1, bs}, {bs - 1, 2}, {size / 2, bs + 7}, {size - 1, 10},
	} {
		if w.off < 0 || w.off > size {
			continue
		}
		buf := make([]byte, w.n)
		k, err := n.readLocked(fd, buf, w.off)
		if err != nil {
			t.Fatalf("step %d: read %d+%d: %v", step, w.off, w.n, err)
		}
		if exp := want[w.off:min(w.off+w.n, size)]; !bytes.Equal(buf[:k], exp) {
			t.Fatalf("step %d: read %d+%d: %d bytes differ from the %d expected", step, w.off, w.n, k, len(exp))
		}
	}
}

// TestContentOps drives the block format's write, extend and truncate paths directly
// against a plain file, including the edge cases at block boundaries.
func TestContentOps(t *testing.T) {
	cases := []struct {
		name string
		op   func(n *state, fd int, ref *os.File) error
	}{
		{"write at 0", func(n *state, fd int, ref *os.File) error { return both(n, fd, ref, 0, 10) }},
		{"write full block", func(n *state, fd int, ref *os.File) error { return both(n, fd, ref, 0, 4096) }},
		{"write past EOF into a later block", func(n *state, fd int, ref *os.File) error { return both(n, fd, ref, 3*4096+5, 7) }},
		{"write straddling blocks", func(n *state, fd int, ref *os.File) error { return both(n, fd, ref, 4090, 20) }},
		{"write inside the last partial block", func(n *state, fd int, ref *os.File) error { return both(n, fd, ref, 3*4096+2, 3) }},
		{"truncate to a partial block", func(n *state, fd int, ref *os.File) error { return trunc(n, fd, ref, 5000) }},
		{"grow to a block boundary", func(n *state, fd int, ref *os.File) error { return trunc(n, fd, ref, 5*4096) }},
		{"grow to a partial block", func(n *state, fd int, ref *os.File) error { return trunc(n, fd, ref, 7*4096+1) }},
		{"truncate to a boundary", func(n *state, fd int, ref *os.File) error { return trunc(n, fd, ref, 4096) }},
		{"truncate to zero", func(n *state, fd int, ref *os.File) error { return trunc(n, fd, ref, 0) }},
		{"write after truncate to zero", func(n *state, fd int, ref *os.File) error { return both(n, fd, ref, 100, 1) }},
		{"large write", func(n *state, fd int, ref *os.File) error { return both(n, fd, ref, 12345, 1<<20) }},
	}
	n, fd, ref := newTestNode(t)
	for i, c := range cases {
		if err := c.op(n, fd, ref); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		checkSame(t, i, n, fd, ref)
	}
	// Hole blocks stay holes on disk and read as zeros.
	if err := trunc(n, fd, ref, 0); err != nil {
		t.Fatal(err)
	}
	if err := both(n, fd, ref, 100<<20, 10); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 > 1<<20 {
		t.Errorf("a write at 100 MiB allocated %d bytes: holes were filled", st.Blocks*512)
	}
	got := make([]byte, 8192)
	if k, err := n.readLocked(fd, got, 50<<20); err != nil || k != 8192 || !bytes.Equal(got, make([]byte, 8192)) {
		t.Errorf("reading a hole: %d %v", k, err)
	}
}

func TestContentRandom(t *testing.T) {
	n, fd, ref := newTestNode(t)
	r := rand.New(rand.NewSource(7))
	for i := 0; i < 3000; i++ {
		var err error
		if r.Intn(5) == 0 {
			err = trunc(n, fd, ref, int64(r.Intn(200000)))
		} else {
			err = both(n, fd, ref, int64(r.Intn(200000)), 1+r.Intn(20000))
		}
		if err != nil {
			t.Fatal(err)
		}
		if i%100 == 0 {
			checkSame(t, i, n, fd, ref)
		}
	}
	checkSame(t, -1, n, fd, ref)
}

// TestContentLarge: requests of up to 1 MiB, as FUSE sends them, against a plain
// reference file; aligned (sealed from and opened into the caller's buffer) and
// unaligned, inside the file, across its end and beyond it.
func TestContentLarge(t *testing.T) {
	n, fd, ref := newTestNode(t)
	r := rand.New(rand.NewSource(11))
	const limit = 3 << 20
	for i := 0; i < 300; i++ {
		off, size := int64(r.Intn(limit)), 1+r.Intn(1<<20)
		if r.Intn(2) == 0 {
			off, size = off/bs*bs, (size/bs+1)*bs
		}
		var err error
		if r.Intn(8) == 0 {
			err = trunc(n, fd, ref, off)
		} else {
			err = both(n, fd, ref, off, size)
		}
		if err != nil {
			t.Fatal(err)
		}
		if i%20 == 0 {
			checkSame(t, i, n, fd, ref)
		}
		off, size = int64(r.Intn(limit)), 1+r.Intn(1<<20)
		if r.Intn(2) == 0 {
			off, size = off/bs*bs, (size/bs+1)*bs
		}
		want := make([]byte, size)
		k1, _ := ref.ReadAt(want, off)
		got := make([]byte, size)
		k2, err := n.readLocked(fd, got, off)
		if err != nil || k1 != k2 || !bytes.Equal(got[:k2], want[:k1]) {
			t.Fatalf("op %d: read %d+%d: %d bytes, %v; want %d", i, off, size, k2, err, k1)
		}
	}
	checkSame(t, -1, n, fd, ref)
}

func both(n *state, fd int, ref *os.File, off int64, size int) error {
	data := make([]byte, size)
	_, _ = crand.Read(data)
	if _, err := ref.WriteAt(data, off); err != nil {
		return err
	}
	return n.writeLocked(fd, data, off)
}

func trunc(n *state, fd int, ref *os.File, size int64) error {
	if err := ref.Truncate(size); err != nil {
		return err
	}
	return n.truncateLocked(fd, size)
}

func TestTamperedBlockIsAnError(t *testing.T) {
	n, fd, ref := newTestNode(t)
	if err := both(n, fd, ref, 0, 3*4096); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := syscall.Pread(fd, b, crypto.BlockOffset(1)+30); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 1
	if _, err := syscall.Pwrite(fd, b, crypto.BlockOffset(1)+30); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 3*4096)
	if _, err := n.readLocked(fd, got, 0); err == nil {
		t.Fatal("reading a tampered block succeeded")
	}
	if k, err := n.readLocked(fd, got[:4096], 0); err != nil || k != 4096 {
		t.Errorf("block 0 should still read: %v", err)
	}
}

// BenchmarkWrite1MiB seals a 1 MiB FUSE-sized write into a file, as the zone data path
// does, without a mount.
func BenchmarkWrite1MiB(b *testing.B) {
	n, fd, _ := newTestNode(b)
	data := make([]byte, 1<<20)
	b.SetBytes(int64(len(data)))
	for i := 0; i < b.N; i++ {
		if err := n.writeLocked(fd, data, int64(i%64)<<20); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRead1MiB(b *testing.B) {
	n, fd, _ := newTestNode(b)
	data := make([]byte, 1<<20)
	if err := n.writeLocked(fd, data, 0); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for i := 0; i < b.N; i++ {
		if _, err := n.readLocked(fd, data, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteLocked and BenchmarkReadLocked measure the block format on a backing
// file with 1 MiB requests, the size FUSE sends: sealing or opening 256 blocks plus one
// pwrite or pread, without a mount.
func BenchmarkWriteLocked(b *testing.B) {
	n, fd, _ := newTestNode(b)
	data := make([]byte, 1<<20)
	b.SetBytes(int64(len(data)))
	for i := 0; b.Loop(); i++ {
		if err := n.writeLocked(fd, data, int64(i%64)<<20); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadLocked(b *testing.B) {
	n, fd, _ := newTestNode(b)
	data := make([]byte, 1<<20)
	for i := range 64 {
		if err := n.writeLocked(fd, data, int64(i)<<20); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(data)))
	for i := 0; b.Loop(); i++ {
		if _, err := n.readLocked(fd, data, int64(i%64)<<20); err != nil {
			b.Fatal(err)
		}
	}
}
