package integration

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// randomOps is the length of each seed's run; EZFS_RANDOM_OPS runs longer.
func randomOps(t *testing.T) int {
	if s := os.Getenv("EZFS_RANDOM_OPS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("EZFS_RANDOM_OPS=%q: want a positive number", s)
		}
		return n
	}
	return 20000
}

// pair is one file under test: its zone copy and its reference copy on plain disk.
type pair struct {
	zone, ref     string
	zoneFd, refFd int
	old           []string // earlier names still linked: zone, ref, zone, ref, ...
}

func openPair(t *testing.T, p *pair) {
	t.Helper()
	var err error
	if p.zoneFd, err = syscall.Open(p.zone, syscall.O_RDWR|syscall.O_CREAT, 0o644); err != nil {
		t.Fatalf("open %s: %v", p.zone, err)
	}
	if p.refFd, err = syscall.Open(p.ref, syscall.O_RDWR|syscall.O_CREAT, 0o644); err != nil {
		t.Fatalf("open %s: %v", p.ref, err)
	}
}

func closePair(p *pair) {
	syscall.Close(p.zoneFd)
	syscall.Close(p.refFd)
}

// randomOffset favours block boundaries and their neighbours, where the format is
// most likely to go wrong.
func randomOffset(r *rand.Rand, limit int) int {
	switch r.Intn(4) {
	case 0:
		return max(r.Intn(limit/4096+1)*4096+r.Intn(3)-1, 0)
	case 1:
		return r.Intn(8192)
	default:
		return r.Intn(limit)
	}
}

func randomSize(r *rand.Rand) int {
	switch r.Intn(5) {
	case 0:
		return 1 + r.Intn(16)
	case 1:
		return 4096*(1+r.Intn(4)) + r.Intn(3) - 1
	case 2:
		return 1 + r.Intn(128<<10)
	default:
		return 1 + r.Intn(9000)
	}
}

// TestRandomOperations applies the same long random sequence of writes, truncates,
// appends, reopens, hard links and fsyncs to files in a zone and to reference files
// on plain disk, and compares contents, sizes and reads at every check.
func TestRandomOperations(t *testing.T) {
	e := newEnv(t)
	zone := e.zone("rand", "random")
	refDir := t.TempDir()
	ops := randomOps(t)
	for _, seed := range []int64{1, 2} {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			runRandom(t, seed, ops, filepath.Join(zone, fmt.Sprint(seed)), filepath.Join(refDir, fmt.Sprint(seed)))
		})
	}
}

func runRandom(t *testing.T, seed int64, ops int, zoneDir, refDir string) {
	for _, d := range []string{zoneDir, refDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r := rand.New(rand.NewSource(seed))
	const files = 5
	const limit = 600 << 10
	pairs := make([]*pair, files)
	for i := range pairs {
		pairs[i] = &pair{zone: filepath.Join(zoneDir, fmt.Sprint(i)), ref: filepath.Join(refDir, fmt.Sprint(i))}
		openPair(t, pairs[i])
	}
	defer func() {
		for _, p := range pairs {
			closePair(p)
		}
	}()
	allocModes := fallocModes(t, refDir)
	buf := make([]byte, 256<<10)
	got := make([]byte, 256<<10)
	links := 0
	counts := map[string]int{}
	for op := 0; op < ops; op++ {
		p := pairs[r.Intn(files)]
		kind := r.Intn(100)
		switch {
		case kind < 3:
			counts["fallocate"]++
			off, n := randomOffset(r, limit), randomSize(r)
			mode := allocModes[r.Intn(len(allocModes))]
			both(t, op, fmt.Sprintf("fallocate(%#x, %d, %d)", mode, off, n), func(fd int) (int, error) {
				return 0, syscall.Fallocate(fd, mode, int64(off), int64(n))
			}, p)
		case kind < 45:
			counts["pwrite"]++
			off, n := randomOffset(r, limit), randomSize(r)
			r.Read(buf[:n])
			both(t, op, "pwrite", func(fd int) (int, error) { return syscall.Pwrite(fd, buf[:n], int64(off)) }, p)
		case kind < 60:
			counts["pread"]++
			off, n := randomOffset(r, limit), randomSize(r)
			n1, err1 := syscall.Pread(p.zoneFd, got[:n], int64(off))
			n2, err2 := syscall.Pread(p.refFd, buf[:n], int64(off))
			if n1 != n2 || err1 != err2 || !bytes.Equal(got[:n1], buf[:n2]) {
				t.Fatalf("op %d: pread(%d, %d): zone %d %v, ref %d %v, equal %v", op, off, n, n1, err1, n2, err2, bytes.Equal(got[:max(n1, 0)], buf[:max(n2, 0)]))
			}
		case kind < 70:
			counts["truncate"]++
			size := r.Intn(limit)
			if r.Intn(4) == 0 {
				size = r.Intn(limit/4096) * 4096
			}
			if r.Intn(3) == 0 {
				// by path, without an open file
				if err1, err2 := syscall.Truncate(p.zone, int64(size)), syscall.Truncate(p.ref, int64(size)); err1 != err2 {
					t.Fatalf("op %d: truncate %d: zone %v ref %v", op, size, err1, err2)
				}
			} else {
				both(t, op, "ftruncate", func(fd int) (int, error) { return 0, syscall.Ftruncate(fd, int64(size)) }, p)
			}
		case kind < 78:
			counts["append"]++
			n := randomSize(r)
			r.Read(buf[:n])
			for _, path := range []string{p.zone, p.ref} {
				fd, err := syscall.Open(path, syscall.O_WRONLY|syscall.O_APPEND, 0)
				if err != nil {
					t.Fatalf("op %d: open append: %v", op, err)
				}
				if k, err := syscall.Write(fd, buf[:n]); k != n || err != nil {
					t.Fatalf("op %d: append %d to %s: %d %v", op, n, path, k, err)
				}
				syscall.Close(fd)
			}
		case kind < 86:
			counts["reopen"]++
			closePair(p)
			openPair(t, p)
		case kind < 90:
			counts["link"]++
			// Give the file a second name and use it from now on; half the time
			// drop the old name, else writes through the new name must show there too.
			links++
			keepOld := r.Intn(2) == 0
			for _, side := range []*string{&p.zone, &p.ref} {
				nn := filepath.Join(filepath.Dir(*side), fmt.Sprintf("l%d", links))
				if err := os.Link(*side, nn); err != nil {
					t.Fatalf("op %d: link: %v", op, err)
				}
				if !keepOld {
					if err := os.Remove(*side); err != nil {
						t.Fatalf("op %d: remove old name: %v", op, err)
					}
				} else {
					p.old = append(p.old, *side)
				}
				*side = nn
			}
			if len(p.old) > 4 {
				// Keep at most two old names; unlinking the oldest exercises nlink.
				for _, o := range p.old[:2] {
					if err := os.Remove(o); err != nil {
						t.Fatalf("op %d: remove old link: %v", op, err)
					}
				}
				p.old = p.old[2:]
			}
		case kind < 94:
			counts["fsync"]++
			both(t, op, "fsync", func(fd int) (int, error) { return 0, syscall.Fsync(fd) }, p)
		default:
			counts["check"]++
			compareFiles(t, op, p)
		}
		if op%1000 == 999 {
			for _, q := range pairs {
				compareFiles(t, op, q)
			}
		}
	}
	for _, q := range pairs {
		compareFiles(t, ops, q)
	}
	t.Logf("seed %d: %d operations: %v", seed, ops, counts)
}

// fallocModes are the fallocate(2) modes the random test uses: reserve, extend, punch a
// hole and zero a range, less those the reference directory's file system lacks (tmpfs
// cannot zero a range).
func fallocModes(t *testing.T, refDir string) []uint32 {
	t.Helper()
	modes := []uint32{0, unix.FALLOC_FL_KEEP_SIZE, unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE}
	f, err := os.CreateTemp(refDir, "probe")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	for _, m := range []uint32{unix.FALLOC_FL_ZERO_RANGE, unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE} {
		if err := syscall.Fallocate(int(f.Fd()), m, 0, 4096); err == nil {
			modes = append(modes, m)
		} else {
			t.Logf("reference file system: fallocate %#x: %v; left out", m, err)
		}
	}
	return modes
}

// both runs f on the zone and the reference descriptor and requires equal results.
func both(t *testing.T, op int, what string, f func(fd int) (int, error), p *pair) {
	t.Helper()
	n1, err1 := f(p.zoneFd)
	n2, err2 := f(p.refFd)
	if n1 != n2 || err1 != err2 {
		t.Fatalf("op %d: %s: zone %d %v, ref %d %v", op, what, n1, err1, n2, err2)
	}
}

func compareFiles(t *testing.T, op int, p *pair) {
	t.Helper()
	var s1, s2, s3 syscall.Stat_t
	if err := syscall.Fstat(p.zoneFd, &s1); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Fstat(p.refFd, &s2); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(p.zone, &s3); err != nil {
		t.Fatal(err)
	}
	if s1.Size != s2.Size || s3.Size != s2.Size {
		t.Fatalf("op %d: size: zone fstat %d stat %d, ref %d", op, s1.Size, s3.Size, s2.Size)
	}
	z, err := os.ReadFile(p.zone)
	if err != nil {
		t.Fatalf("op %d: read %s: %v", op, p.zone, err)
	}
	ref, err := os.ReadFile(p.ref)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(z, ref) {
		i := 0
		for i < len(z) && i < len(ref) && z[i] == ref[i] {
			i++
		}
		t.Fatalf("op %d: %s differs from reference at byte %d (sizes %d, %d)", op, p.zone, i, len(z), len(ref))
	}
	for i := 0; i+1 < len(p.old); i += 2 {
		if o, err := os.ReadFile(p.old[i]); err != nil || !bytes.Equal(o, z) {
			t.Fatalf("op %d: hard link %s does not show the file's contents (%v)", op, p.old[i], err)
		}
	}
}
