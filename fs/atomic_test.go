package fs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ezfs/ezfs/crypto"
	"golang.org/x/sys/unix"
)

// backingOf reads the whole backing file open as fd.
func backingOf(t *testing.T, fd int) []byte {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, st.Size)
	if err := preadFull(fd, b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

// fullTmpfs returns a directory on a tmpfs of size bytes, unmounted at the end.
func fullTmpfs(t *testing.T, size string) string {
	t.Helper()
	d := t.TempDir()
	if err := unix.Mount("tmpfs", d, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(d, unix.MNT_DETACH) })
	return d
}

// fillUp takes the free space of the file system of dir.
func fillUp(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for err == nil {
		_, err = f.Write(make([]byte, 4096))
	}
	if errnoOf(err) != syscall.ENOSPC {
		t.Fatalf("filling %s: %v", dir, err)
	}
}

func errnoOf(err error) syscall.Errno {
	var en syscall.Errno
	errors.As(err, &en)
	return en
}

// onFile points n at a new backing file in dir.
func onFile(t *testing.T, n *state, dir string) int {
	t.Helper()
	fd, err := syscall.Open(filepath.Join(dir, "enc"), syscall.O_RDWR|syscall.O_CREAT, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	n.size = 0
	return fd
}

// TestFailedWriteChangesNothing: writes that fail for lack of space (a full tmpfs:
// the reservation fails) or half-way (a file size limit, which preallocation does not
// check) leave the backing file byte for byte as it was, partial last block included.
func TestFailedWriteChangesNothing(t *testing.T) {
	cases := []struct {
		name string
		op   func(n *state, fd int) error
	}{
		{"append", func(n *state, fd int) error { return n.writeLocked(fd, make([]byte, 300000), n.size) }},
		{"write past the end", func(n *state, fd int) error { return n.writeLocked(fd, make([]byte, 10), n.size+200000) }},
		{"grow", func(n *state, fd int) error { return n.truncateLocked(fd, n.size+300000) }},
		{"fill the last block", func(n *state, fd int) error { return n.extendLocked(fd, (n.size/bs+1)*bs) }},
	}
	for _, limit := range []string{"space", "file size"} {
		for _, c := range cases {
			t.Run(limit+"/"+c.name, func(t *testing.T) {
				n, _, _ := newTestNode(t)
				dir := fullTmpfs(t, "256k")
				fd := onFile(t, n, dir)
				// The old last block is partial and spans a page boundary.
				if err := n.writeLocked(fd, bytes.Repeat([]byte("x"), 9000), 0); err != nil {
					t.Fatal(err)
				}
				before := backingOf(t, fd)
				if limit == "space" {
					fillUp(t, dir)
				} else {
					var old syscall.Rlimit
					if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
						t.Fatal(err)
					}
					lim := syscall.Rlimit{Cur: uint64(len(before)) + 1000, Max: old.Max}
					if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
						t.Fatal(err)
					}
					defer syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old)
				}
				err := c.op(n, fd)
				if err != syscall.ENOSPC && err != syscall.EFBIG {
					t.Fatalf("got %v, want ENOSPC or EFBIG", err)
				}
				if n.size != 9000 {
					t.Errorf("size %d after the failure, want 9000", n.size)
				}
				if after := backingOf(t, fd); !bytes.Equal(after, before) {
					t.Errorf("backing file changed: %d bytes, was %d", len(after), len(before))
				}
			})
		}
	}
}

// TestFailedWriteIntoHole: a write over the holes of a sparse file on a full file
// system fails before it changes anything: the holes are reserved first, so no block
// is left half new, half zeros.
func TestFailedWriteIntoHole(t *testing.T) {
	n, _, _ := newTestNode(t)
	dir := fullTmpfs(t, "256k")
	fd := onFile(t, n, dir)
	if err := n.writeLocked(fd, bytes.Repeat([]byte("x"), 9000), 0); err != nil {
		t.Fatal(err)
	}
	if err := n.truncateLocked(fd, 200000); err != nil { // whole blocks of zeros: holes
		t.Fatal(err)
	}
	before := backingOf(t, fd)
	fillUp(t, dir)
	// Two pages free: enough for the first pages of the write, not for all of it.
	if err := os.Truncate(filepath.Join(dir, "filler"), fileSize(t, filepath.Join(dir, "filler"))-2*4096); err != nil {
		t.Fatal(err)
	}
	if err := n.writeLocked(fd, bytes.Repeat([]byte("y"), 40000), 5*bs); err != syscall.ENOSPC {
		t.Fatalf("write into the holes of a full file system: %v, want ENOSPC", err)
	}
	if after := backingOf(t, fd); !bytes.Equal(after, before) {
		t.Errorf("backing file changed by a failed write into its holes")
	}
}

func fileSize(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestTornTail: a backing file cut in the middle of a write opens at its intact size,
// reads as the intact part, logs its name, and takes an append after cutting the torn
// bytes; in a file whose torn block is its first (which the read of its header brings
// along) as in one with whole blocks before it.
func TestTornTail(t *testing.T) {
	for _, blocks := range []int64{0, 3} {
		t.Run(fmt.Sprintf("%d whole blocks", blocks), func(t *testing.T) { testTornTail(t, blocks) })
	}
}

func testTornTail(t *testing.T, blocks int64) {
	size := blocks*bs + 1000                                       // whole blocks and a partial one
	whole := max(crypto.BackingSize(blocks*bs), crypto.HeaderSize) // with no block: the header
	data := bytes.Repeat([]byte("0123456789"), int(size)/10+1)[:size]
	cases := []struct {
		name   string
		tear   func(t *testing.T, n *state, fd int) // from a file of size bytes
		intact int64
	}{
		{"the header cut short", func(t *testing.T, n *state, fd int) { cut(t, fd, crypto.HeaderSize-5) }, 0},
		{"1 byte past whole blocks", func(t *testing.T, n *state, fd int) { cut(t, fd, whole+1) }, blocks * bs},
		{"28 bytes past whole blocks", func(t *testing.T, n *state, fd int) { cut(t, fd, whole+28) }, blocks * bs},
		{"a full block cut to 3,000 bytes", func(t *testing.T, n *state, fd int) {
			extend(t, n, fd, (blocks+1)*bs)
			cut(t, fd, whole+3000)
		}, -1},
		{"an append torn after the new tail", func(t *testing.T, n *state, fd int) {
			// The old block is whole; the bytes past it are the start of its new tail.
			junk := bytes.Repeat([]byte{0xa5}, 500)
			if err := pwriteFull(fd, junk, crypto.BackingSize(size)); err != nil {
				t.Fatal(err)
			}
		}, size},
		{"a shrink torn before the cut", func(t *testing.T, n *state, fd int) {
			// A shorter block sealed over the start of the old one, the old end still there.
			sealed, err := n.cc.SealBlock(nil, data[blocks*bs:blocks*bs+100], blocks)
			if err != nil {
				t.Fatal(err)
			}
			if err := pwriteFull(fd, sealed, crypto.BlockOffset(blocks)); err != nil {
				t.Fatal(err)
			}
		}, blocks*bs + 100},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n, fd, _ := newTestNode(t)
			if err := n.writeLocked(fd, data, 0); err != nil {
				t.Fatal(err)
			}
			c.tear(t, n, fd)
			if c.intact < 0 {
				checkUnauthenticatedTail(t, n, fd, data[:blocks*bs])
				return
			}
			want := append([]byte(nil), data[:min(c.intact, size)]...)
			if c.intact > size {
				want = append(want, make([]byte, c.intact-size)...)
			}
			reopen(t, n, fd)
			if n.size != c.intact {
				t.Fatalf("size %d, want %d", n.size, c.intact)
			}
			if log := n.fsys.log.Writer().(*bytes.Buffer).String(); !strings.Contains(log, n.path()) {
				t.Errorf("log does not name %s: %q", n.path(), log)
			}
			checkRead(t, n, fd, want)
			more := []byte("appended after the tear")
			if err := n.writeLocked(fd, more, n.size); err != nil {
				t.Fatal(err)
			}
			reopen(t, n, fd)
			checkRead(t, n, fd, append(want, more...))
			if n.torn {
				t.Error("torn again after the append")
			}
		})
	}
}

// TestShortNotTorn: a file shorter than the header whose bytes are not a prefix of its
// own header (another file's, or not ezfs at all) is not a torn write: the open fails
// (EIO) and the file is left as it is, never cut.
func TestShortNotTorn(t *testing.T) {
	other := crypto.Header(crypto.FileID{0xee})
	for name, b := range map[string][]byte{"another file's header": other[:crypto.HeaderSize-1], "not ezfs": []byte("plain text")} {
		t.Run(name, func(t *testing.T) {
			n, fd, _ := newTestNode(t)
			if err := pwriteFull(fd, b, 0); err != nil {
				t.Fatal(err)
			}
			if _, err := readHead(fd, make([]byte, headLen(int64(len(b)))), n.cc.FileID()); err == nil {
				t.Fatalf("readHead of %q: no error, want one (EIO)", b)
			}
			if got := backingOf(t, fd); !bytes.Equal(got, b) {
				t.Errorf("backing file changed: %q", got)
			}
		})
	}
}

func cut(t *testing.T, fd int, backing int64) {
	t.Helper()
	if err := syscall.Ftruncate(fd, backing); err != nil {
		t.Fatal(err)
	}
}

func extend(t *testing.T, n *state, fd int, size int64) {
	t.Helper()
	if err := n.writeLocked(fd, make([]byte, size-n.size), n.size); err != nil {
		t.Fatal(err)
	}
}

// reopen forgets what n knows of its file's size, as a new mount would.
func reopen(t *testing.T, n *state, fd int) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	n.size, n.sizeKnown, n.torn = 0, false, false
	head, err := readHead(fd, make([]byte, headLen(st.Size)), n.cc.FileID())
	if err != nil {
		t.Fatal(err)
	}
	if err := n.learnSizeLocked(fd, st.Size, head); err != nil {
		t.Fatal(err)
	}
}

// checkUnauthenticatedTail: a last block that authenticates at no length (a tear inside
// a new block, or tampering) is kept, as a tampered block anywhere else would be: the
// blocks before it read, it fails, and the file takes new writes once cut back to them.
func checkUnauthenticatedTail(t *testing.T, n *state, fd int, intact []byte) {
	t.Helper()
	reopen(t, n, fd)
	if log := n.fsys.log.Writer().(*bytes.Buffer).String(); !strings.Contains(log, n.path()) {
		t.Errorf("log does not name %s: %q", n.path(), log)
	}
	got := make([]byte, len(intact)+1)
	if k, err := n.readLocked(fd, got[:len(intact)], 0); err != nil || !bytes.Equal(got[:k], intact) {
		t.Fatalf("read of the intact blocks: %d bytes, %v", k, err)
	}
	if _, err := n.readLocked(fd, got[:1], int64(len(intact))); !errors.Is(err, crypto.ErrAuth) {
		t.Fatalf("read of the last block: %v, want %v", err, crypto.ErrAuth)
	}
	if err := n.truncateLocked(fd, int64(len(intact))); err != nil {
		t.Fatal(err)
	}
	more := []byte("appended after cutting the tail")
	if err := n.writeLocked(fd, more, n.size); err != nil {
		t.Fatal(err)
	}
	reopen(t, n, fd)
	checkRead(t, n, fd, append(append([]byte(nil), intact...), more...))
}

func checkRead(t *testing.T, n *state, fd int, want []byte) {
	t.Helper()
	got := make([]byte, len(want)+bs)
	k, err := n.readLocked(fd, got, 0)
	if err != nil || !bytes.Equal(got[:k], want) {
		t.Fatalf("read %d bytes, %v; want the %d expected", k, err, len(want))
	}
}

// TestIntactPlainSize: no backing size is reported as a size that cannot be.
func TestIntactPlainSize(t *testing.T) {
	whole := crypto.BackingSize(2 * bs)
	for backing, want := range map[int64]int64{
		0: 0, 10: 0, crypto.HeaderSize: 0, whole: 2 * bs, whole + 1: 2 * bs, whole + crypto.BlockOverhead: 2 * bs,
		whole + crypto.BlockOverhead + 1: 2*bs + 1, whole + 3000: 2*bs + 3000 - crypto.BlockOverhead,
	} {
		if got := crypto.IntactPlainSize(backing); got != want {
			t.Errorf("IntactPlainSize(%d) = %d, want %d", backing, got, want)
		}
	}
}

// BenchmarkAppend1000 appends 1,000-byte records, the small-write case in which every
// request rewrites the partial last block.
func BenchmarkAppend1000(b *testing.B) {
	n, fd, _ := newTestNode(b)
	data := make([]byte, 1000)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if n.size >= 64<<20 {
			if err := n.truncateLocked(fd, 0); err != nil {
				b.Fatal(err)
			}
		}
		if err := n.writeLocked(fd, data, n.size); err != nil {
			b.Fatal(err)
		}
	}
}
