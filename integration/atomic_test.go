package integration

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ezfs/ezfs/crypto"
	"golang.org/x/sys/unix"
)

// newLoopEnv is newEnv on a fresh ext4 image of size MiB, loop-mounted as the backing
// folder and unmounted after the test.
func newLoopEnv(t *testing.T, size int) *env {
	t.Helper()
	d := tempDir(t)
	img, backing := filepath.Join(d, "ext4.img"), filepath.Join(d, "backing")
	if err := os.Mkdir(backing, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("truncate", "-s", strconv.Itoa(size)+"M", img).CombinedOutput(); err != nil {
		t.Fatalf("truncate: %v: %s", err, out)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, backing).CombinedOutput(); err != nil {
		t.Fatalf("mount -o loop: %v: %s", err, out)
	}
	// Registered first, so it runs after the ezfs unmount.
	t.Cleanup(func() {
		// The daemon may still hold the disk for a moment after `ezfs umount`.
		if err := eventually(func() error { return unix.Unmount(backing, 0) }); err != nil {
			t.Errorf("umount %s: %v", backing, err)
		}
	})
	return newEnvIn(t, d)
}

// record is the i-th of a test's appended records, n bytes with a newline.
func record(i, n int) []byte {
	s := fmt.Sprintf("%08d-", i)
	return []byte(s + strings.Repeat(string(rune('a'+i%26)), n-len(s)-1) + "\n")
}

// TestSpaceFull: appends through the mount until the backing ext4 is full fail with
// ENOSPC, and leave the file holding exactly the appends that succeeded, before and
// after a remount.
func TestSpaceFull(t *testing.T) {
	e := newLoopEnv(t, 64)
	zone := e.zone("z", "k")
	// Most of the disk goes to a plain file, so that the records fill the rest quickly.
	filler, err := os.Create(filepath.Join(e.mnt, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(e.backing, &st); err != nil {
		t.Fatal(err)
	}
	if err := filler.Truncate(int64(st.Bavail*uint64(st.Bsize)) - 2<<20); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Fallocate(int(filler.Fd()), 0, 0, int64(st.Bavail*uint64(st.Bsize))-2<<20); err != nil {
		t.Fatal(err)
	}
	filler.Close()
	p := filepath.Join(zone, "f")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var want []byte
	for i := 0; ; i++ {
		r := record(i, 1000)
		if _, err = f.Write(r); err != nil {
			break
		}
		want = append(want, r...)
	}
	if errnoOf(err) != syscall.ENOSPC {
		t.Fatalf("append after %d bytes: %v, want ENOSPC", len(want), err)
	}
	t.Logf("disk full after %d bytes of records", len(want))
	if fi, err := os.Stat(e.backingOf(p)); err != nil || fi.Size() != crypto.BackingSize(int64(len(want))) {
		t.Errorf("backing file of %d bytes after the failed append, want %d (%v)", fi.Size(), crypto.BackingSize(int64(len(want))), err)
	}
	checkContents(t, p, want)
	f.Close()
	e.remount()
	checkContents(t, p, want)
}

func checkContents(t *testing.T, p string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	if !bytes.Equal(got, want) {
		k := 0
		for k < min(len(got), len(want)) && got[k] == want[k] {
			k++
		}
		t.Fatalf("%s: %d bytes, want %d; first difference at %d", p, len(got), len(want), k)
	}
}

// TestTornTail: zone files whose backing file ends in a torn write (bytes past the
// whole blocks too few to be a block, or a last block cut short) open, read and stat
// as their intact part, are named in the daemon log, and take appends.
func TestTornTail(t *testing.T) {
	e := newEnv(t)
	zone := e.zone("z", "k")
	whole := crypto.BackingSize(3 * crypto.BlockSize)
	cases := []struct {
		name    string
		size    int   // written through the mount
		backing int64 // then cut to
		// bad: the cut leaves a last block that authenticates at no length, which is
		// kept (it could be tampering) and reads as EIO.
		bad bool
	}{
		{"one", 3*crypto.BlockSize + 1000, whole + 1, false},
		{"twentyeight", 3*crypto.BlockSize + 1000, whole + crypto.BlockOverhead, false},
		{"threethousand", 4 * crypto.BlockSize, whole + 3000, true},
	}
	for _, c := range cases {
		if err := os.WriteFile(filepath.Join(zone, c.name), patterned(c.size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e.umount()
	for _, c := range cases {
		if err := os.Truncate(e.backingOf(filepath.Join(zone, c.name)), c.backing); err != nil {
			t.Fatal(err)
		}
	}
	e.mount()
	intact := patterned(3 * crypto.BlockSize)
	for _, c := range cases {
		p := filepath.Join(zone, c.name)
		why := ": torn tail"
		if c.bad {
			checkBadTail(t, p, intact)
			why = ": its last block (3) does not authenticate"
		} else {
			checkContents(t, p, intact)
			if fi, err := os.Stat(p); err != nil || fi.Size() != int64(len(intact)) {
				t.Errorf("%s: stat %v, size %d, want %d", c.name, err, fi.Size(), len(intact))
			}
		}
		log, _ := os.ReadFile(filepath.Join(e.backing, ".ezfs", "ezfs.log"))
		if !bytes.Contains(log, []byte(e.backingOf(p)+why)) {
			t.Errorf("daemon log does not name %s (%q)", e.backingOf(p), why)
		}
		more := []byte("appended after the torn tail\n")
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(more); err != nil {
			t.Fatal(err)
		}
		f.Close()
		checkContents(t, p, append(intact, more...))
	}
	e.remount()
	for _, c := range cases {
		checkContents(t, filepath.Join(zone, c.name), append(intact, []byte("appended after the torn tail\n")...))
	}
}

// mountsAt counts the mounts stacked at mnt.
func mountsAt(t *testing.T, mnt string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	k := 0
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == mnt {
			k++
		}
	}
	return k
}

// checkBadTail: a file whose last block authenticates at no length opens, its intact
// blocks read, a read of the whole fails with EIO, and once cut back to its intact part
// (as an operator would) it is an ordinary file.
func checkBadTail(t *testing.T, p string, intact []byte) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	got := make([]byte, len(intact))
	if _, err := io.ReadFull(f, got); err != nil || !bytes.Equal(got, intact) {
		t.Errorf("read of the intact part: %v", err)
	}
	f.Close()
	if _, err := os.ReadFile(p); !errors.Is(err, syscall.EIO) {
		t.Errorf("read of the whole: %v, want EIO", err)
	}
	if err := os.Truncate(p, int64(len(intact))); err != nil {
		t.Fatal(err)
	}
}

// appendEnv names the file TestKillHelper appends records to when the test binary runs
// as the writer of TestKillDuringAppend.
const appendEnv = "EZFS_TEST_APPEND_TO"

const recordLen = 100

// TestKillHelper is the writer process of TestKillDuringAppend, not a test: it appends
// numbered records to the file $EZFS_TEST_APPEND_TO, fsyncs each and prints how many
// are fsynced, until it fails.
func TestKillHelper(t *testing.T) {
	p := os.Getenv(appendEnv)
	if p == "" {
		t.Skip("the writer of TestKillDuringAppend")
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		os.Exit(1)
	}
	for i := 0; ; i++ {
		if _, err := f.Write(record(i, recordLen)); err != nil {
			os.Exit(0)
		}
		if err := f.Sync(); err != nil {
			os.Exit(0)
		}
		fmt.Printf("%d\n", i+1)
	}
}

// TestKillDuringAppend: the daemon is killed (SIGKILL) at a random moment while a
// process appends records and fsyncs each; after a remount every fsynced record reads
// back, whatever write the kill cut.
func TestKillDuringAppend(t *testing.T) {
	// On a tmpfs, where fsync costs nothing, the daemon spends more of its time in the
	// writes a kill can cut.
	d := tempDir(t)
	backing := filepath.Join(d, "backing")
	if err := os.Mkdir(backing, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", backing, "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(backing, unix.MNT_DETACH) }) // after the ezfs unmount
	e := newEnvIn(t, d)
	zone := e.zone("z", "k")
	r := rand.New(rand.NewSource(time.Now().UnixNano()))
	for round := 0; round < 30; round++ {
		p := filepath.Join(zone, fmt.Sprintf("f%d", round))
		pid := e.daemonPID()
		cmd := exec.Command(os.Args[0], "-test.run=^TestKillHelper$")
		cmd.Env = append(os.Environ(), appendEnv+"="+p)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		started, synced := make(chan struct{}), make(chan int)
		go func() {
			n := 0
			for s := bufio.NewScanner(out); s.Scan(); {
				if k, err := strconv.Atoi(s.Text()); err == nil {
					if n == 0 {
						close(started)
					}
					n = k
				}
			}
			synced <- n
		}()
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: the writer fsynced no record", round)
		}
		time.Sleep(time.Duration(20+r.Intn(181)) * time.Millisecond)
		e.killPID(pid)
		_ = cmd.Process.Kill()
		n := <-synced
		_ = cmd.Wait()
		e.mount()
		// The dead mount was detached, not covered: one mount at the mount point.
		if k := mountsAt(t, e.mnt); k != 1 {
			t.Fatalf("round %d: %d mounts at %s after the remount, want 1", round, k, e.mnt)
		}
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("round %d: read after the kill (%d records fsynced): %v", round, n, err)
		}
		var want []byte
		for i := range n {
			want = append(want, record(i, recordLen)...)
		}
		if len(got) < len(want) || !bytes.Equal(got[:len(want)], want) {
			t.Fatalf("round %d: %d bytes read, the %d records fsynced (%d bytes) are not all there", round, len(got), n, len(want))
		}
	}
	log, _ := os.ReadFile(filepath.Join(e.backing, ".ezfs", "ezfs.log"))
	t.Logf("torn tails mended: %d", bytes.Count(log, []byte("torn tail")))
}
