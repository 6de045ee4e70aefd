package integration

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ezfs/ezfs/crypto"
	"golang.org/x/sys/unix"
)

// sharedPair mounts one backing directory twice, as two hosts on shared storage do:
// two daemons, mount points a.mnt and b.mnt, each with its own copy of one keystore
// (the same zone keys and zones: a backup restored), both with mount options opts. zone is the zone "z"
// (key k) in a's mount; plain is the directory "plain" outside zones.
func sharedPair(t *testing.T, opts ...string) (a, b *env, zone, plain string) {
	t.Helper()
	d := tempDir(t)
	back := filepath.Join(d, "backing")
	a = &env{t: t, backing: back, mnt: filepath.Join(d, "a"), opts: opts, keystore: filepath.Join(d, "ks-a")}
	a.start()
	zone = a.zone("z", "k")
	plain = filepath.Join(a.mnt, "plain")
	if err := os.Mkdir(plain, 0o755); err != nil {
		t.Fatal(err)
	}
	// b's keystore is a's, copied as an operator would: a backup of the mounted
	// keystore, restored into a folder of b's.
	bak, ksB := filepath.Join(d, "ks.bak"), filepath.Join(d, "ks-b")
	a.run("keystore", "backup", bak, "--mount", a.mnt)
	a.run("init", back, "--from-backup", bak, "--keystore", ksB)
	b = &env{t: t, backing: back, mnt: filepath.Join(d, "b"), opts: opts, keystore: ksB}
	if err := os.Mkdir(b.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	b.mount()
	t.Cleanup(b.cleanup)
	return a, b, zone, plain
}

// on is the path in b's mount of p, a path in a's mount.
func on(a, b *env, p string) string {
	rel, err := filepath.Rel(a.mnt, p)
	if err != nil {
		panic(err)
	}
	return filepath.Join(b.mnt, rel)
}

// TestSharedStorage (issue 17, sharedstorage): two daemons serve one backing directory
// with -o sharedstorage. What one writes, deletes, recreates or appends the other
// serves at once, byte for byte, in a zone and outside zones; a zone file replaced
// behind the other's back reads as the new file or fails, never as the old key's
// plaintext; an inode number that comes back in another zone never brings back a
// node of the wrong zone; locks of one daemon hold against the other's.
func TestSharedStorage(t *testing.T) {
	a, b, zone, plain := sharedPair(t, "sharedstorage")
	if st := b.status(); !strings.Contains(strings.Join(st.Options, ","), "sharedstorage") {
		t.Errorf("status does not show sharedstorage: %q", st.Options)
	}
	dirs := []struct{ name, dir string }{{"zone", zone}, {"plain", plain}}
	a.sub("written", func(t *testing.T) {
		for _, d := range dirs {
			for i, w := range []*env{a, b} {
				r := []*env{b, a}[i]
				p := filepath.Join(d.dir, "w-"+filepath.Base(w.mnt))
				data := patterned(300_000 + i)
				if err := os.WriteFile(on(a, w, p), data, 0o644); err != nil {
					t.Fatal(err)
				}
				checkContents(t, on(a, r, p), data)
			}
		}
	})
	a.sub("append", func(t *testing.T) {
		for _, d := range dirs {
			p := filepath.Join(d.dir, "log")
			data := patterned(5000)
			writeFile(t, p, string(data))
			checkContents(t, on(a, b, p), data)
			// A file b holds open across the appends sees them too.
			held, err := os.OpenFile(on(a, b, p), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			for i, n := range []int{1, 4096, 70_000} {
				// b's stat right before the append would be what b's kernel serves
				// for a second if it cached attributes.
				if _, err := os.Stat(on(a, b, p)); err != nil {
					t.Fatal(err)
				}
				appendBytes(t, p, patterned(n))
				data = append(data, patterned(n)...)
				// b writes at the new end through its old file, before anything else:
				// a write on a stale size would seal over a's bytes.
				w := []byte{byte('a' + i)}
				if _, err := held.WriteAt(w, int64(len(data))); err != nil {
					t.Fatal(err)
				}
				data = append(data, w...)
				checkContents(t, p, data)
				got := make([]byte, len(data)+1)
				if k, err := held.ReadAt(got, 0); k != len(data) || !bytes.Equal(got[:k], data) {
					t.Errorf("%s: b's file open before the append reads %d bytes (%v), want %d", d.name, k, err, len(data))
				}
				if st, err := os.Stat(on(a, b, p)); err != nil || st.Size() != int64(len(data)) {
					t.Errorf("%s: b's stat after an append through a: %v %v, want size %d", d.name, st.Size(), err, len(data))
				}
				// b appends too, through a new open, while its old one is open.
				more := []byte{byte('A' + i)}
				appendBytes(t, on(a, b, p), more)
				data = append(data, more...)
				checkContents(t, p, data)
				checkContents(t, on(a, b, p), data)
			}
			held.Close()
		}
	})
	a.sub("fallocate", func(t *testing.T) {
		// b extends a zone file with fallocate through a file it held open across
		// a's append: the zeros go after a's bytes, not over them.
		p := filepath.Join(zone, "alloc")
		data := patterned(5000)
		writeFile(t, p, string(data))
		held, err := os.OpenFile(on(a, b, p), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer held.Close()
		if _, err := held.ReadAt(make([]byte, 10), 0); err != nil {
			t.Fatal(err)
		}
		appendBytes(t, p, patterned(3000))
		data = append(data, patterned(3000)...)
		if err := unix.Fallocate(int(held.Fd()), 0, 0, int64(len(data))+100); err != nil {
			t.Fatal(err)
		}
		checkContents(t, p, append(data, make([]byte, 100)...))
	})
	a.sub("created", func(t *testing.T) {
		for _, d := range dirs {
			p := filepath.Join(d.dir, "late")
			if _, err := os.Stat(on(a, b, p)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("%s: %v", d.name, err)
			}
			writeFile(t, p, "late")
			if got, err := os.ReadFile(on(a, b, p)); err != nil || string(got) != "late" {
				t.Errorf("%s: b reads %q %v right after a made it", d.name, got, err)
			}
		}
	})
	a.sub("recreated", func(t *testing.T) { sharedRecreate(t, a, b, zone, plain) })
	a.sub("replaced while open", func(t *testing.T) { sharedReplaced(t, a, b, zone) })
	a.sub("inode into a zone", func(t *testing.T) { sharedIntoZone(t, a, b, zone, plain) })
	a.sub("locks", func(t *testing.T) {
		for _, d := range dirs {
			p := filepath.Join(d.dir, "lock")
			writeFile(t, p, "x")
			fa, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			fb, err := os.Open(on(a, b, p))
			if err != nil {
				t.Fatal(err)
			}
			if err := unix.Flock(int(fa.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
				t.Fatal(err)
			}
			if err := unix.Flock(int(fb.Fd()), unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
				t.Errorf("%s: b took a lock that a holds: %v", d.name, err)
			}
			fa.Close() // the kernel releases a's file (and its lock) soon after
			if err := eventually(func() error { return unix.Flock(int(fb.Fd()), unix.LOCK_EX|unix.LOCK_NB) }); err != nil {
				t.Errorf("%s: b cannot lock once a let go: %v", d.name, err)
			}
			fb.Close()
		}
	})
}

// sharedRecreate: a deletes and recreates files and directories under the same names
// (a new data key each time; ext4 hands freed inode numbers out again), b reads each
// version right.
func sharedRecreate(t *testing.T, a, b *env, zone, plain string) {
	reused := map[string]int{}
	for _, dir := range []string{zone, plain} {
		d := filepath.Join(dir, "d")
		p := filepath.Join(d, "f")
		inos := map[string]uint64{}
		for i := range 20 {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
			want := []byte(strings.Repeat(string(rune('a'+i)), 1000+i))
			writeFile(t, p, string(want))
			checkContents(t, on(a, b, p), want)
			for what, q := range map[string]string{"file": p, "directory": d} {
				var st unix.Stat_t
				if err := unix.Lstat(a.backingOf(q), &st); err != nil {
					t.Fatal(err)
				}
				if st.Ino == inos[what] {
					reused[what]++
				}
				inos[what] = st.Ino
			}
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(d); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("of 40 recreated files and directories, %d files and %d directories had their inode number back", reused["file"], reused["directory"])
}

// sharedReplaced: b holds a zone file open; on the shared disk its inode gets another
// zone file's contents and EDEK (an inode number another host freed and reused, made
// here in place). b's further open fails, its open file does not serve the new
// contents under the old key, and once closed b reads the new file.
func sharedReplaced(t *testing.T, a, b *env, zone string) {
	p, q := filepath.Join(zone, "victim"), filepath.Join(zone, "other")
	old, other := patterned(20_000), bytes.Repeat([]byte("other file "), 3000)
	writeFile(t, p, string(old))
	writeFile(t, q, string(other))
	held, err := os.Open(on(a, b, p))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	checkContents(t, on(a, b, p), old)
	back, err := os.ReadFile(a.backingOf(q))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(a.backingOf(p), back, 0); err != nil { // truncates in place
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(a.backingOf(p), "user.ezfs.edek", rawEDEK(t, a.backingOf(q)), 0); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(on(a, b, p)); err == nil {
		t.Errorf("b opened the replaced file while its old copy is open: %d bytes", len(got))
	}
	if !strings.Contains(b.daemonLog(), "replaced on the shared storage") {
		t.Errorf("b's log does not say why the open failed:\n%s", b.daemonLog())
	}
	got := make([]byte, len(old)+len(other))
	// An error, or the new file whole; anything else came under the old key.
	if k, err := held.ReadAt(got, 0); (err == nil || errors.Is(err, io.EOF)) && !bytes.Equal(got[:k], other) {
		t.Errorf("b's open file reads %d bytes of the replaced file (%v)", k, err)
	}
	held.Close()
	checkContents(t, on(a, b, p), other)
}

// sharedIntoZone: an inode number b knows as a file outside zones turns up inside the
// zone (another host deleted the file and the number came back for a zone file; made
// here by a rename on the disk). b must serve it as a zone file, which it is not (no
// EDEK): never take plaintext into the zone through a node of the plain file.
func sharedIntoZone(t *testing.T, a, b *env, zone, plain string) {
	p := filepath.Join(plain, "wanderer")
	writeFile(t, p, "plain file")
	held, err := os.Open(on(a, b, p)) // b keeps its node
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	q := filepath.Join(zone, "arrived")
	if err := os.Rename(a.backingOf(p), a.backingOf(q)); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(on(a, b, q), os.O_WRONLY|os.O_APPEND, 0)
	if err == nil {
		_, err = f.WriteString(" and secret plaintext")
		f.Close()
	}
	back, _ := os.ReadFile(a.backingOf(q))
	if err == nil || bytes.Contains(back, []byte("secret plaintext")) {
		t.Errorf("b wrote into the zone through the plain file's node: %v, backing %q", err, back)
	}
	if errnoOf(err) != syscall.EIO {
		t.Logf("write into the stray file: %v", err)
	}
}

// TestSharedStoragePosix runs go-fuse's conformance suite in a zone and outside zones
// of a sharedstorage mount, while a second daemon serves the same backing directory:
// the option changes what is cached, not what the file system does.
func TestSharedStoragePosix(t *testing.T) {
	_, _, zone, plain := sharedPair(t, "sharedstorage")
	runPosix(t, []struct{ name, dir string }{{"zone", zone}, {"plain", plain}})
}

// TestSharedStorageOff is the contrast: without -o sharedstorage the second daemon's
// kernel serves what it cached, for up to a second: an append through a is not seen
// through b, nor a file a made after b looked for it.
func TestSharedStorageOff(t *testing.T) {
	a, b, zone, _ := sharedPair(t)
	p := filepath.Join(zone, "log")
	writeFile(t, p, "first")
	if _, err := os.Stat(on(a, b, p)); err != nil {
		t.Fatal(err)
	}
	appendBytes(t, p, []byte(" second"))
	if got, err := os.ReadFile(on(a, b, p)); err != nil || string(got) != "first" {
		t.Errorf("b read %q %v right after the append: want the stale %q (else this contrast shows nothing)", got, err, "first")
	}
	late := filepath.Join(zone, "late")
	if _, err := os.Stat(on(a, b, late)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	writeFile(t, late, "late")
	if _, err := os.Stat(on(a, b, late)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("b found a file made after it looked for it: %v (want the cached negative entry)", err)
	}
}

// TestTornStateReplaced: a zone file whose torn tail the daemon keeps in mind across
// opens (its state keeps the intact size) is replaced on the disk by another zone
// file, contents and EDEK, under the same inode (another host, or an admin's copy).
// The next open reads the new file whole: the kept size was the old file's. In every
// mode, not only with sharedstorage.
func TestTornStateReplaced(t *testing.T) {
	e := newEnv(t)
	zone := e.zone("z", "k")
	p, q := filepath.Join(zone, "torn"), filepath.Join(zone, "other")
	writeFile(t, p, string(patterned(3*crypto.BlockSize+1000)))
	other := bytes.Repeat([]byte("the other file "), 2000)
	writeFile(t, q, string(other))
	if err := os.Truncate(e.backingOf(p), crypto.BackingSize(3*crypto.BlockSize)+1); err != nil {
		t.Fatal(err)
	}
	checkContents(t, p, patterned(3*crypto.BlockSize)) // learns the torn tail, kept
	back, err := os.ReadFile(e.backingOf(q))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.backingOf(p), back, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(e.backingOf(p), "user.ezfs.edek", rawEDEK(t, e.backingOf(q)), 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // the kernel's cached attributes expire
	checkContents(t, p, other)
}
