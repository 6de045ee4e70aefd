package integration

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ezfs/ezfs/crypto"
	"golang.org/x/sys/unix"
)

var pattern = []byte("EZFS-KNOWN-PLAINTEXT-PATTERN-0123456789abcdef|")

func patterned(n int) []byte {
	return bytes.Repeat(pattern, n/len(pattern)+1)[:n]
}

// TestBackingIsCiphertext: backing files in a zone never hold the plaintext, carry an
// EDEK, and have exactly the designed size; ezfs's xattrs and keystore are invisible.
func TestBackingIsCiphertext(t *testing.T) {
	e := newEnv(t)
	zone := e.zone("secret", "k")
	for _, n := range []int{0, 1, len(pattern), 4095, 4096, 4097, 3*4096 + 17, 1 << 20} {
		p := filepath.Join(zone, "f"+strconv.Itoa(n))
		if err := os.WriteFile(p, patterned(n), 0o644); err != nil {
			t.Fatal(err)
		}
		back, err := os.ReadFile(e.backingOf(p))
		if err != nil {
			t.Fatal(err)
		}
		if n >= 16 && bytes.Contains(back, pattern[:16]) {
			t.Errorf("backing file of %d bytes contains plaintext", n)
		}
		if want := crypto.BackingSize(int64(n)); int64(len(back)) != want {
			t.Errorf("backing size of %d plaintext bytes: %d, want %d", n, len(back), want)
		}
		if n > 0 && !bytes.HasPrefix(back, []byte("EZFS")) {
			t.Errorf("backing file of %d bytes has no header", n)
		}
		if _, err := unix.Lgetxattr(e.backingOf(p), "user.ezfs.edek", make([]byte, 512)); err != nil {
			t.Errorf("backing file of %d bytes: no EDEK: %v", n, err)
		}
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, patterned(n)) {
			t.Errorf("read back %d bytes: %v, equal %v", n, err, bytes.Equal(got, patterned(n)))
		}
	}

	// ezfs's own attributes are invisible and untouchable through the mount; others pass.
	f := filepath.Join(zone, "f1")
	for _, p := range []string{f, zone} {
		buf := make([]byte, 4096)
		sz, err := unix.Listxattr(p, buf)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(buf[:sz]), "ezfs") {
			t.Errorf("listxattr %s shows %q", p, buf[:sz])
		}
		for _, a := range []string{"user.ezfs.edek", "user.ezfs.zone"} {
			if _, err := unix.Getxattr(p, a, buf); !errors.Is(err, unix.ENODATA) {
				t.Errorf("getxattr %s %s: %v, want ENODATA", p, a, err)
			}
			if err := unix.Setxattr(p, a, []byte("x"), 0); !errors.Is(err, unix.EPERM) {
				t.Errorf("setxattr %s %s: %v, want EPERM", p, a, err)
			}
			if err := unix.Removexattr(p, a); !errors.Is(err, unix.EPERM) {
				t.Errorf("removexattr %s %s: %v, want EPERM", p, a, err)
			}
		}
	}
	if err := unix.Setxattr(f, "user.mine", []byte("v"), 0); err != nil {
		t.Errorf("setxattr user.mine: %v", err)
	}

	// The keystore folder is invisible.
	ents, err := os.ReadDir(e.mnt)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ents {
		if d.Name() == ".ezfs" {
			t.Error("keystore folder listed in the mount root")
		}
	}
	if _, err := os.Stat(filepath.Join(e.mnt, ".ezfs")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat .ezfs: %v, want not exist", err)
	}
	if err := os.Mkdir(filepath.Join(e.mnt, ".ezfs"), 0o700); err == nil {
		t.Error("mkdir .ezfs through the mount succeeded")
	}

	// Outside zones files pass through in the clear, as in HDFS.
	plain := filepath.Join(e.mnt, "plain.txt")
	if err := os.WriteFile(plain, patterned(1000), 0o644); err != nil {
		t.Fatal(err)
	}
	if back, _ := os.ReadFile(e.backingOf(plain)); !bytes.Equal(back, patterned(1000)) {
		t.Error("a file outside zones is not passed through")
	}
	if fi := e.fileInfo(plain); fi.Encrypted || fi.Zone != "" {
		t.Errorf("file info of a plain file: %+v", fi)
	}
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestTamper: one flipped byte of a block, the header or the EDEK makes that file
// fail with EIO after a remount; other files stay readable and the daemon runs on.
func TestTamper(t *testing.T) {
	e := newEnv(t)
	zone := e.zone("z", "k")
	data := patterned(5*4096 + 100)
	names := []string{"block", "lastblock", "header", "edek", "intact"}
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(zone, n), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e.umount()
	b := func(n string) string { return filepath.Join(e.backing, "z", n) }
	flipByte(t, b("block"), crypto.BlockOffset(2)+crypto.NonceSize+50)
	flipByte(t, b("lastblock"), crypto.BackingSize(int64(len(data)))-1)
	flipByte(t, b("header"), 10)
	edek := make([]byte, 512)
	sz, err := unix.Lgetxattr(b("edek"), "user.ezfs.edek", edek)
	if err != nil {
		t.Fatal(err)
	}
	edek[sz-5] ^= 0x01
	if err := unix.Lsetxattr(b("edek"), "user.ezfs.edek", edek[:sz], 0); err != nil {
		t.Fatal(err)
	}
	e.mount()
	for _, n := range names[:4] {
		_, err := os.ReadFile(filepath.Join(zone, n))
		if errnoOf(err) != syscall.EIO {
			t.Errorf("read of tampered %s: %v, want EIO", n, err)
		}
	}
	got, err := os.ReadFile(filepath.Join(zone, "intact"))
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("intact file: %v", err)
	}
	// The block before the damage still reads: only tampered blocks fail.
	f, err := os.Open(filepath.Join(zone, "block"))
	if err == nil {
		buf := make([]byte, 4096)
		if _, err := f.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, data[:4096]) {
			t.Errorf("undamaged block 0 of a damaged file: %v", err)
		}
		f.Close()
	}
	e.run("status", "--mount", e.mnt) // the daemon still answers
	log, _ := os.ReadFile(filepath.Join(e.backing, ".ezfs", "ezfs.log"))
	for _, want := range []string{"authentication failed", "names another file"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("daemon log does not explain the EIO (%q):\n%s", want, log)
		}
	}
}

// TestRemount: after unmount and mount every file reads back identical, among them a
// 64 MiB random file and a sparse file with holes.
func TestRemount(t *testing.T) {
	e := newEnv(t)
	zone := e.zone("z", "k")
	r := rand.New(rand.NewSource(64))
	big := filepath.Join(zone, "big")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	// Odd write sizes, so writes straddle block boundaries.
	if _, err := io.CopyBuffer(io.MultiWriter(f, h), io.LimitReader(r, 64<<20), make([]byte, 100003)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	bigSum := h.Sum(nil)

	sparse := filepath.Join(zone, "sparse")
	want := make([]byte, 70<<20+5)
	sf, err := os.Create(sparse)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int{0, 10 << 20, 50<<20 + 3, 50<<20 + 4096*3 - 7} {
		chunk := patterned(10000)
		copy(want[off:], chunk)
		if _, err := sf.WriteAt(chunk, int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	if err := sf.Truncate(int64(len(want))); err != nil {
		t.Fatal(err)
	}
	sf.Close()
	small := map[string][]byte{}
	for _, n := range []int{0, 1, 4096, 5000} {
		p := filepath.Join(zone, "small"+strconv.Itoa(n))
		small[p] = patterned(n)
		if err := os.WriteFile(p, small[p], 0o600); err != nil {
			t.Fatal(err)
		}
	}

	e.remount()

	got, err := os.ReadFile(big)
	if err != nil {
		t.Fatal(err)
	}
	if s := sha256.Sum256(got); !bytes.Equal(s[:], bigSum) || len(got) != 64<<20 {
		t.Errorf("64 MiB file differs after remount (%d bytes)", len(got))
	}
	got, err = os.ReadFile(sparse)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("sparse file differs after remount: %v (%d bytes)", err, len(got))
	}
	var st syscall.Stat_t
	if err := syscall.Stat(e.backingOf(sparse), &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 >= st.Size/2 {
		t.Errorf("sparse file's holes were filled on the backing disk: %d bytes allocated of %d", st.Blocks*512, st.Size)
	}
	for p, w := range small {
		if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, w) {
			t.Errorf("%s differs after remount: %v", p, err)
		}
	}
}

// TestKeyRoll: after a roll new files use name@2, old ones stay on name@1 and readable.
func TestKeyRoll(t *testing.T) {
	e := newEnv(t)
	zone := e.zone("z", "roll")
	old := filepath.Join(zone, "old")
	if err := os.WriteFile(old, []byte("written under version 1"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.run("key", "roll", "--mount", e.mnt, "roll")
	nw := filepath.Join(zone, "new")
	if err := os.WriteFile(nw, []byte("written under version 2"), 0o644); err != nil {
		t.Fatal(err)
	}
	check := func() {
		t.Helper()
		for p, v := range map[string]uint32{old: 1, nw: 2} {
			fi := e.fileInfo(p)
			if !fi.Encrypted || fi.Key != "roll" || fi.KeyVersion != v || len(fi.FileID) != 32 || fi.Zone != "/z" {
				t.Errorf("file info %s: %+v, want roll@%d", p, fi, v)
			}
			if _, err := os.ReadFile(p); err != nil {
				t.Errorf("read %s: %v", p, err)
			}
		}
	}
	check()
	e.remount()
	check()
	var ki struct {
		Current  uint32 `json:"current_version"`
		Versions []struct {
			Version     uint32 `json:"version"`
			MainVersion uint32 `json:"main_key_version"`
		} `json:"versions"`
	}
	decodeJSON(t, e.run("key", "describe", "--mount", e.mnt, "--json", "roll"), &ki)
	if ki.Current != 2 || len(ki.Versions) != 2 || ki.Versions[0].MainVersion != 1 || ki.Versions[1].MainVersion != 1 {
		t.Errorf("key describe: %+v", ki)
	}
	if out := e.run("key", "describe", "--mount", e.mnt, "roll"); !strings.Contains(out, "roll@1") || !strings.Contains(out, "main key default v1") {
		t.Errorf("key describe output:\n%s", out)
	}
}

// TestTmpfileLink: an O_TMPFILE file written and then given a name with linkat (the
// way to create a file atomically) keeps its data, encrypted in a zone, across a
// remount; one opened with O_EXCL cannot be linked, as on the backing disk.
func TestTmpfileLink(t *testing.T) {
	e := newEnv(t)
	plain := filepath.Join(e.mnt, "plain")
	if err := os.Mkdir(plain, 0o755); err != nil {
		t.Fatal(err)
	}
	dirs := []string{e.zone("zone", "k"), plain}
	data := patterned(3*4096 + 17)
	for _, dir := range dirs {
		fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR, 0o640)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Write(fd, data); err != nil {
			t.Fatal(err)
		}
		if err := unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), unix.AT_FDCWD, filepath.Join(dir, "linked"), unix.AT_SYMLINK_FOLLOW); err != nil {
			t.Fatalf("%s: linkat of an O_TMPFILE file: %v", dir, err)
		}
		unix.Close(fd)

		fd, err = unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_EXCL, 0o640)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), unix.AT_FDCWD, filepath.Join(dir, "excl"), unix.AT_SYMLINK_FOLLOW); err == nil {
			t.Errorf("%s: linkat of an O_TMPFILE|O_EXCL file succeeded", dir)
		}
		unix.Close(fd)
	}
	if back, err := os.ReadFile(e.backingOf(filepath.Join(dirs[0], "linked"))); err != nil || bytes.Contains(back, data[:16]) {
		t.Errorf("backing file of the linked zone file: %v, or it holds plaintext", err)
	}
	e.remount()
	for _, dir := range dirs {
		got, err := os.ReadFile(filepath.Join(dir, "linked"))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s: linked file after remount: %v, equal %v", dir, err, bytes.Equal(got, data))
		}
	}
}

// TestUnlinkedOpen: a file unlinked while open keeps working through its descriptor:
// data, fchmod, fchown, ftruncate, futimens, extended attributes, access(2) and
// opening it anew through /proc/self/fd, in a zone and outside.
func TestUnlinkedOpen(t *testing.T) {
	e := newEnv(t)
	plain := filepath.Join(e.mnt, "plain")
	if err := os.Mkdir(plain, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{e.zone("zone", "k"), plain} {
		p := filepath.Join(dir, "f")
		f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		fd := int(f.Fd())
		mtime := unix.NsecToTimespec(time.Date(2001, 2, 3, 4, 5, 6, 7000, time.UTC).UnixNano())
		for _, step := range []struct {
			name string
			do   func() error
		}{
			{"write", func() error { _, err := f.WriteAt(patterned(10000), 0); return err }},
			{"fchmod", func() error { return unix.Fchmod(fd, 0o600) }},
			{"fchown", func() error { return unix.Fchown(fd, 1, 2) }},
			{"ftruncate", func() error { return unix.Ftruncate(fd, 5000) }},
			{"fsetxattr", func() error { return unix.Fsetxattr(fd, "user.x", []byte("1"), 0) }},
			{"fgetxattr", func() error {
				if _, err := unix.Fgetxattr(fd, "user.x", make([]byte, 8)); err != nil {
					return err
				}
				_, err := unix.Flistxattr(fd, make([]byte, 256))
				return err
			}},
			{"access", func() error { return unix.Access(fmt.Sprintf("/proc/self/fd/%d", fd), unix.R_OK|unix.W_OK) }},
			{"reopen", func() error {
				// as `cat /dev/fd/3` does
				got, err := os.ReadFile(fmt.Sprintf("/proc/self/fd/%d", fd))
				if err == nil && !bytes.Equal(got, patterned(10000)[:5000]) {
					err = fmt.Errorf("read %d bytes, not what was written", len(got))
				}
				return err
			}},
			{"futimens", func() error {
				return unix.UtimesNanoAt(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), []unix.Timespec{mtime, mtime}, 0)
			}},
		} {
			if err := step.do(); err != nil {
				t.Errorf("%s: %s of a file unlinked while open: %v", dir, step.name, err)
			}
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&0o7777 != 0o600 || st.Uid != 1 || st.Gid != 2 || st.Size != 5000 || st.Mtim != mtime {
			t.Errorf("%s: fstat after the changes: mode %o uid %d gid %d size %d mtime %v", dir, st.Mode&0o7777, st.Uid, st.Gid, st.Size, st.Mtim)
		}
		got := make([]byte, 6000)
		if n, _ := f.ReadAt(got, 0); n != 5000 || !bytes.Equal(got[:n], patterned(10000)[:5000]) {
			t.Errorf("%s: read back %d bytes, equal %v", dir, n, bytes.Equal(got[:n], patterned(10000)[:n]))
		}
	}
}
