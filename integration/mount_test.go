package integration

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/ezfs/ezfs/control"
	"golang.org/x/sys/unix"
)

// TestMountErrors: wrong passphrase, missing keystore, double mount and double init
// each fail with a clear one-line message and leave nothing mounted.
func TestMountErrors(t *testing.T) {
	e := newEnv(t)
	zone := e.zone("z", "k")
	if err := os.WriteFile(filepath.Join(zone, "f"), []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.fails("is in use", "mount", e.backing, t.TempDir())
	e.fails("already has a keystore", "init", e.backing)
	e.umount()

	e.failsEnv([]string{"EZFS_PASSPHRASE=not the passphrase"}, "wrong passphrase", "mount", e.backing, e.mnt)
	if e.mounted() {
		t.Fatal("mounted with a wrong passphrase")
	}
	bad := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(bad, []byte("also wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.fails("wrong passphrase", "mount", "--passphrase-file", bad, e.backing, e.mnt)
	good := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(good, []byte(passphrase+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.failsEnv(nil, "run 'ezfs init' first", "mount", t.TempDir(), e.mnt)
	e.fails("is not a directory", "mount", e.backing, filepath.Join(e.mnt, "nonexistent"))
	e.fails(`unknown mount option "bogus"`, "mount", "-o", "noatime,bogus", e.backing, e.mnt)
	e.run("mount", "--passphrase-file", good, e.backing, e.mnt)
	if got, err := os.ReadFile(filepath.Join(zone, "f")); err != nil || string(got) != "data" {
		t.Errorf("read after mount with a passphrase file: %q %v", got, err)
	}
	e.fails("not an ezfs mount", "umount", t.TempDir())
}

// TestReadOnlyMount: -o ro serves reads and refuses writes.
func TestReadOnlyMount(t *testing.T) {
	e := newEnv(t)
	zone := e.zone("z", "k")
	f := filepath.Join(zone, "f")
	if err := os.WriteFile(f, []byte("read me"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.umount()
	e.opts = []string{"ro"}
	e.mount()
	if got, err := os.ReadFile(f); err != nil || string(got) != "read me" {
		t.Errorf("read on a ro mount: %q %v", got, err)
	}
	if err := os.WriteFile(f, []byte("x"), 0o644); errnoOf(err) != syscall.EROFS {
		t.Errorf("write on a ro mount: %v, want EROFS", err)
	}
	if err := os.Mkdir(filepath.Join(e.mnt, "d"), 0o755); errnoOf(err) != syscall.EROFS {
		t.Errorf("mkdir on a ro mount: %v, want EROFS", err)
	}
}

// TestRemountAfterKill: after SIGKILL of the daemon, `ezfs mount` works again without
// a manual umount, and fsynced data is there.
func TestRemountAfterKill(t *testing.T) {
	e := newEnv(t)
	zone := e.zone("z", "k")
	f := filepath.Join(zone, "f")
	fh, err := os.Create(f)
	if err != nil {
		t.Fatal(err)
	}
	data := patterned(100000)
	if _, err := fh.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := fh.Sync(); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	var st []control.Status
	decodeJSON(t, e.run("status", "--json"), &st)
	pid := 0
	for _, s := range st {
		if s.Mountpoint == e.mnt {
			pid = s.PID
		}
	}
	if pid == 0 {
		t.Fatalf("no daemon for %s in %+v", e.mnt, st)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
		syscall.Nanosleep(&syscall.Timespec{Nsec: 20e6}, nil)
	}
	e.mount()
	if got, err := os.ReadFile(f); err != nil || !bytes.Equal(got, data) {
		t.Errorf("fsynced file after a crash: %v", err)
	}
}

// TestMmap: shared writable mappings of a zone file behave as on disk.
func TestMmap(t *testing.T) {
	e := newEnv(t)
	zone := e.zone("z", "k")
	p := filepath.Join(zone, "mapped")
	want := patterned(3*4096 + 500)
	if err := os.WriteFile(p, want, 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Open(p, syscall.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	m, err := syscall.Mmap(fd, 0, len(want), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m, want) {
		t.Error("mapped contents differ")
	}
	copy(m[4090:], "ACROSS-A-BLOCK-BOUNDARY")
	copy(want[4090:], "ACROSS-A-BLOCK-BOUNDARY")
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		t.Fatal(err)
	}
	syscall.Munmap(m)
	syscall.Close(fd)
	e.remount()
	if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, want) {
		t.Errorf("after msync and remount: %v, equal %v", err, bytes.Equal(got, want))
	}

	// Without msync: zone files are opened without FLUSH on close (FOPEN_NOFLUSH), so
	// pages dirtied through a mapping must still reach the disk when it is unmapped,
	// also when the descriptor was closed first.
	if fd, err = syscall.Open(p, syscall.O_RDWR, 0); err != nil {
		t.Fatal(err)
	}
	if m, err = syscall.Mmap(fd, 0, len(want), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED); err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd)
	copy(m[8000:], "WRITTEN-AFTER-CLOSE")
	copy(want[8000:], "WRITTEN-AFTER-CLOSE")
	copy(m[len(m)-5:], "TAIL!")
	copy(want[len(want)-5:], "TAIL!")
	syscall.Munmap(m)
	e.remount()
	if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, want) {
		t.Errorf("after munmap without msync and remount: %v, equal %v", err, bytes.Equal(got, want))
	}
}

// TestConcurrentWriters: writers on their own descriptors, unaligned and overlapping
// block boundaries but not each other's bytes, all land.
func TestConcurrentWriters(t *testing.T) {
	e := newEnv(t)
	zone := e.zone("z", "k")
	p := filepath.Join(zone, "shared")
	const writers, region = 8, 10007
	want := make([]byte, writers*region)
	rand.New(rand.NewSource(1)).Read(want)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			// Small pieces, so writers interleave within shared blocks.
			for off := w * region; off < (w+1)*region; off += 333 {
				end := min(off+333, (w+1)*region)
				if _, err := f.WriteAt(want[off:end], int64(off)); err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, want) {
		t.Errorf("concurrent writes: %v, equal %v (len %d)", err, bytes.Equal(got, want), len(got))
	}
}
