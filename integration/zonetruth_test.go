package integration

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ezfs/ezfs/control"
	"golang.org/x/sys/unix"
)

// The zone marker's attribute on a zone root, as the backing disk holds it.
const markerAttr = "user.ezfs.zone"

// getMarker reads the zone marker of backing directory dir; nil if it has none.
func getMarker(t *testing.T, dir string) []byte {
	t.Helper()
	buf := make([]byte, 512)
	n, err := unix.Getxattr(dir, markerAttr, buf)
	if errors.Is(err, unix.ENODATA) {
		return nil
	}
	if err != nil {
		t.Fatalf("getxattr %s %s: %v", dir, markerAttr, err)
	}
	return buf[:n]
}

// readServed reads p through the mount and fails the test if what it returns holds
// bytes of the backing file (ciphertext served as contents); it returns the error of
// the open or the read.
func readServed(t *testing.T, p, back string) error {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	got, err := io.ReadAll(f)
	raw, rerr := os.ReadFile(back)
	if rerr != nil {
		t.Fatal(rerr)
	}
	if len(got) > 0 && bytes.Contains(raw, got[:min(len(got), 64)]) {
		t.Errorf("%s: read %d bytes of its backing file (ciphertext served as contents)", p, len(got))
	}
	return err
}

// notInClear fails the test if the backing object back exists and holds plain.
func notInClear(t *testing.T, back string, plain []byte) {
	t.Helper()
	raw, err := os.ReadFile(back)
	if err == nil && bytes.Contains(raw, plain) {
		t.Errorf("%s holds the plaintext written through the mount", back)
	}
}

// TestZoneMarkerRemoved: a registered zone whose root lost its marker, or carries one
// naming another zone, is never served as plain: its files answer EIO, creates in it
// fail, status and zone list show it damaged and the log says why; with the marker
// restored all is as before. A marker copied onto a directory the keystore does not
// know makes no plain directory of it either.
func TestZoneMarkerRemoved(t *testing.T) {
	e := newEnv(t)
	z := e.zone("z", "k")
	f1, f2 := filepath.Join(z, "f1"), filepath.Join(z, "sub", "f2")
	d1, d2 := patterned(10000), []byte("second file, in a subdirectory of the zone\n")
	if err := os.Mkdir(filepath.Dir(f2), 0o755); err != nil {
		t.Fatal(err)
	}
	// ft is truncated while the zone is damaged, which must fail; the healthy checks
	// leave it out, so that a truncate that went through fails only once.
	ft := filepath.Join(z, "trunc")
	for p, d := range map[string][]byte{f1: d1, f2: d2, ft: d1} {
		if err := os.WriteFile(p, d, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	root := e.backingOf(z)
	old := getMarker(t, root)
	if old == nil {
		t.Fatalf("zone root %s has no marker", root)
	}
	zid := e.zoneList()[0].ID
	if !bytes.Contains(old, []byte(zid)) {
		t.Fatalf("marker %q does not name zone %s", old, zid)
	}
	secret := []byte("EZFS-NEW-FILE-SECRET-PLAINTEXT-in-a-damaged-zone")

	// damaged checks the mounted zone is not served and reported damaged for why.
	damaged := func(t *testing.T, why string) {
		for _, c := range []struct{ p, back string }{{f1, e.backingOf(f1)}, {f2, e.backingOf(f2)}} {
			if err := readServed(t, c.p, c.back); errnoOf(err) != syscall.EIO {
				t.Errorf("read %s: %v, want EIO", c.p, err)
			}
		}
		if f, err := os.OpenFile(f1, os.O_WRONLY|os.O_APPEND, 0); err == nil {
			_, werr := f.Write(secret)
			f.Close()
			t.Errorf("open %s for appending: works (write: %v), want EIO", f1, werr)
		}
		notInClear(t, e.backingOf(f1), secret)
		// truncate(2) by name comes without a handle: not an open, but a write.
		before, err := os.ReadFile(e.backingOf(ft))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(ft, 5); errnoOf(err) != syscall.EIO {
			t.Errorf("truncate %s: %v, want EIO", ft, err)
		}
		if after, _ := os.ReadFile(e.backingOf(ft)); !bytes.Equal(after, before) {
			t.Errorf("truncate %s changed its backing file (%d bytes, were %d)", ft, len(after), len(before))
		}
		lk := filepath.Join(z, "sub", "link")
		err = os.Link(f1, lk)
		t.Logf("link in the damaged zone: %v", err)
		os.Remove(lk)
		for _, p := range []string{filepath.Join(z, "new"), filepath.Join(z, "sub", "new")} {
			if err := os.WriteFile(p, secret, 0o644); errnoOf(err) != syscall.EIO {
				t.Errorf("create %s: %v, want EIO", p, err)
			}
			notInClear(t, e.backingOf(p), secret)
			if err := os.Mkdir(p+".d", 0o755); errnoOf(err) != syscall.EIO {
				t.Errorf("mkdir %s.d: %v, want EIO", p, err)
			}
		}
		st := e.status()
		if len(st.DamagedZones) != 1 || st.DamagedZones[0].ID != zid || st.DamagedZones[0].Path != "/z" ||
			!strings.Contains(st.DamagedZones[0].Damaged, why) {
			t.Errorf("status damaged_zones: %+v, want zone %s at /z, damaged: %q", st.DamagedZones, zid, why)
		}
		zl := e.zoneList()
		if len(zl) != 1 || zl[0].ID != zid || !strings.Contains(zl[0].Damaged, why) {
			t.Errorf("zone list: %+v, want zone %s damaged: %q", zl, zid, why)
		}
		log := e.daemonLog()
		if !strings.Contains(log, "zone "+zid) || !strings.Contains(log, why) {
			t.Errorf("daemon log does not say zone %s is damaged (%q):\n%s", zid, why, log)
		}
	}
	// healthy checks the mounted zone reads, takes a new file, and nothing is damaged.
	healthy := func(t *testing.T, name string) {
		for p, d := range map[string][]byte{f1: d1, f2: d2} {
			if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, d) {
				t.Errorf("read %s: %v, equal %v", p, err, bytes.Equal(got, d))
			}
		}
		p := filepath.Join(z, name)
		if err := os.WriteFile(p, secret, 0o644); err != nil {
			t.Errorf("create %s: %v", p, err)
		} else if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, secret) {
			t.Errorf("read %s back: %q %v", p, got, err)
		}
		notInClear(t, e.backingOf(p), secret)
		if st := e.status(); len(st.DamagedZones) != 0 {
			t.Errorf("status damaged_zones: %+v, want none", st.DamagedZones)
		}
		if zl := e.zoneList(); len(zl) != 1 || zl[0].Damaged != "" {
			t.Errorf("zone list: %+v, want one healthy zone", zl)
		}
	}

	var other [16]byte
	if _, err := rand.Read(other[:]); err != nil {
		t.Fatal(err)
	}
	otherID := hex.EncodeToString(other[:])
	for i, c := range []struct {
		name   string
		marker []byte // nil: removed
		why    string
	}{
		{"removed", nil, "marker (" + markerAttr + ") is missing"},
		{"another zone", []byte("v1 " + otherID + " k"), "marker names zone " + otherID},
	} {
		e.sub(c.name, func(t *testing.T) {
			e.umount()
			var err error
			if c.marker == nil {
				err = unix.Removexattr(root, markerAttr)
			} else {
				err = unix.Setxattr(root, markerAttr, c.marker, 0)
			}
			if err != nil {
				t.Fatal(err)
			}
			e.mount()
			damaged(t, c.why)
			e.umount()
			if err := unix.Setxattr(root, markerAttr, old, 0); err != nil {
				t.Fatal(err)
			}
			e.mount()
			healthy(t, "after-"+string(rune('a'+i)))
		})
	}

	// A copy of the zone on the backing disk, marker and all, at a directory the
	// keystore does not know: not a zone, and not plain either.
	e.sub("copied marker", func(t *testing.T) {
		e.umount()
		copyDir := filepath.Join(e.backing, "copy")
		if out, err := exec.Command("cp", "-a", "--preserve=all", root, copyDir).CombinedOutput(); err != nil {
			t.Fatalf("cp -a: %v: %s", err, out)
		}
		if m := getMarker(t, copyDir); !bytes.Equal(m, old) {
			t.Fatalf("the copy's marker is %q, want %q", m, old)
		}
		e.mount()
		mc := filepath.Join(e.mnt, "copy")
		err := readServed(t, filepath.Join(mc, "f1"), filepath.Join(copyDir, "f1"))
		t.Logf("read of a file in the copy: %v", err)
		if err == nil {
			t.Errorf("read %s/f1 works, want an error", mc)
		}
		err = os.WriteFile(filepath.Join(mc, "new"), secret, 0o644)
		t.Logf("create in the copy: %v", err)
		notInClear(t, filepath.Join(copyDir, "new"), secret)
		if fi, err := os.Stat(filepath.Join(copyDir, "new")); err == nil {
			t.Logf("create in the copy left a backing file of %d bytes", fi.Size())
		}
		if log := e.daemonLog(); !strings.Contains(log, "/copy is damaged") || !strings.Contains(log, "does not know") {
			t.Errorf("daemon log does not say why /copy is not served:\n%s", log)
		}
		before, err := os.ReadFile(filepath.Join(copyDir, "f1"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(filepath.Join(mc, "f1"), 5); err == nil {
			t.Errorf("truncate %s/f1 works, want an error", mc)
		}
		if after, _ := os.ReadFile(filepath.Join(copyDir, "f1")); !bytes.Equal(after, before) {
			t.Errorf("truncate %s/f1 changed its backing file", mc)
		}
		st := e.status()
		t.Logf("status damaged_zones with the copy: %+v", st.DamagedZones)
		// Its files are ciphertext on the disk, and not served: file info must not call
		// them plain.
		out, errOut, err := ezfs("file", "info", "--json", filepath.Join(mc, "f1"))
		t.Logf("file info of a file in the copy: %v: %s%s", err, strings.TrimSpace(out), errOut)
		if err == nil && strings.Contains(out, "in the clear") {
			t.Errorf("file info calls a file that the mount does not serve, ciphertext on the disk, stored in the clear: %s", out)
		}
		// The registered zone is as it was.
		healthy(t, "after-copy")
	})
}

// TestZoneFollowsRename: a zone follows renames of a directory above it, made through
// the mount or on the backing disk: zone create inside it is refused at its new path,
// zone list, file info and a remount know it there, and its files read. A zone create
// through a symbolic link on the backing disk makes no zone of the link's target.
func TestZoneFollowsRename(t *testing.T) {
	e := newEnv(t)
	z := e.zone("p/q/z", "K")
	data := patterned(5000)
	if err := os.WriteFile(filepath.Join(z, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(z, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	zid := e.zoneList()[0].ID

	// at checks the zone is at path in zone list, status and file info, and reads, and
	// that zone create below it is refused.
	at := func(t *testing.T, path string) {
		t.Helper()
		if zl := e.zoneList(); len(zl) != 1 || zl[0].Path != path || zl[0].ID != zid || zl[0].Damaged != "" {
			t.Errorf("zone list: %+v, want zone %s at %s, healthy", zl, zid, path)
		}
		if st := e.status(); len(st.DamagedZones) != 0 {
			t.Errorf("status damaged_zones: %+v", st.DamagedZones)
		}
		zp := filepath.Join(e.mnt, path)
		f := filepath.Join(zp, "f")
		if got, err := os.ReadFile(f); err != nil || !bytes.Equal(got, data) {
			t.Errorf("read %s: %v, equal %v", f, err, bytes.Equal(got, data))
		}
		if fi := e.fileInfo(f); fi.Zone != path || fi.ZoneID != zid || !fi.Encrypted || fi.Key != "K" {
			t.Errorf("file info %s: %+v, want zone %s", f, fi, path)
		}
		sub := filepath.Join(zp, "sub")
		e.fails("is inside an encryption zone", "zone", "create", sub, "--key", "K")
		if m := getMarker(t, e.backingOf(sub)); m != nil {
			t.Errorf("%s was marked as a zone: %q", e.backingOf(sub), m)
		}
		if zl := e.zoneList(); len(zl) != 1 {
			t.Errorf("zone list after the refused create: %+v", zl)
		}
	}

	e.sub("through the mount", func(t *testing.T) {
		if err := os.Rename(filepath.Join(e.mnt, "p"), filepath.Join(e.mnt, "p2")); err != nil {
			t.Fatalf("mv /p /p2: %v", err)
		}
		at(t, "/p2/q/z")
		e.remount()
		at(t, "/p2/q/z")
	})

	e.sub("on the backing disk", func(t *testing.T) {
		e.umount()
		if err := os.Rename(filepath.Join(e.backing, "p2"), filepath.Join(e.backing, "p3")); err != nil {
			t.Fatal(err)
		}
		e.mount()
		// Before the new path is looked up, the daemon knows only the old one.
		t.Logf("zone list before a lookup of the new path: %+v", e.zoneList())
		if _, err := os.Stat(filepath.Join(e.mnt, "p3", "q", "z")); err != nil {
			t.Fatal(err)
		}
		at(t, "/p3/q/z")
		e.remount()
		at(t, "/p3/q/z")
	})

	e.sub("symlink", func(t *testing.T) {
		real := filepath.Join(e.backing, "real", "zz")
		if err := os.MkdirAll(real, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, target := range map[string]string{"rel": "real", "abs": filepath.Join(e.backing, "real"), "last": "real/zz"} {
			if err := os.Symlink(target, filepath.Join(e.backing, name)); err != nil {
				t.Fatal(err)
			}
		}
		// The daemon, asked for a path through a link, refuses it.
		sock := control.SocketPath(e.mnt)
		for _, p := range []string{"rel/zz", "last", "abs/zz"} {
			var zi control.ZoneInfo
			err := control.Call(sock, control.OpZoneCreate, control.ZoneCreateArgs{Path: p, Key: "K"}, &zi)
			if err == nil {
				t.Errorf("daemon: zone create %s through a symlink: made %+v", p, zi)
			} else {
				t.Logf("daemon: zone create %s: %v", p, err)
			}
			if m := getMarker(t, real); m != nil {
				t.Fatalf("zone create %s marked %s: %q", p, real, m)
			}
		}
		// The command resolves its argument; a link out of the mount is refused.
		e.fails("is not inside an ezfs mount", "zone", "create", filepath.Join(e.mnt, "abs", "zz"), "--key", "K")
		if m := getMarker(t, real); m != nil {
			t.Fatalf("zone create through an absolute link marked %s: %q", real, m)
		}
		if zl := e.zoneList(); len(zl) != 1 {
			t.Errorf("zone list after the refused creates: %+v", zl)
		}
		// A link within the mount: what does the command do?
		out, errOut, err := ezfs("zone", "create", filepath.Join(e.mnt, "rel", "zz"), "--key", "K")
		t.Logf("zone create /rel/zz (rel -> real): %v: %s%s", err, out, errOut)
		for _, z := range e.zoneList() {
			if strings.HasPrefix(z.Path, "/rel") || strings.HasPrefix(z.Path, "/last") {
				t.Errorf("a zone registered at a path through a symlink: %+v", z)
			}
			if z.Path == "/real/zz" && (err != nil || !bytes.Contains(getMarker(t, real), []byte(z.ID))) {
				t.Errorf("zone /real/zz registered (%+v) but the command failed (%v) or its root lacks the marker", z, err)
			}
		}
	})
}

// TestKeystoreHiddenRenamed: a keystore inside the backing dir (--keystore) stays
// hidden after a rename of its parent through the mount, and after a remount; the
// default keystore is hidden by identity, not by a spelling of its name.
func TestKeystoreHiddenRenamed(t *testing.T) {
	e := newEnvKeystore(t, "a/ks")
	if _, err := os.Stat(filepath.Join(e.backing, "a", "ks", "ezfs.log")); err != nil {
		t.Fatalf("keystore not where --keystore put it: %v", err)
	}
	if err := os.WriteFile(filepath.Join(e.mnt, "a", "visible"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// hidden checks directory dir of the mount does not show the keystore ks in it.
	hidden := func(t *testing.T, dir string) {
		t.Helper()
		ents, err := os.ReadDir(filepath.Join(e.mnt, dir))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, d := range ents {
			names = append(names, d.Name())
		}
		if strings.Join(names, " ") != "visible" {
			t.Errorf("ls /%s: %q, want only \"visible\"", dir, names)
		}
		ks := filepath.Join(e.mnt, dir, "ks")
		if _, err := os.Lstat(ks); errnoOf(err) != syscall.ENOENT {
			t.Errorf("stat %s: %v, want ENOENT", ks, err)
		}
		inside, err := os.ReadDir(e.ksDir())
		if err != nil || len(inside) == 0 {
			t.Fatalf("keystore on the disk: %v %v", inside, err)
		}
		for _, d := range inside {
			p := filepath.Join(ks, d.Name())
			if f, err := os.Open(p); err == nil {
				f.Close()
				t.Errorf("open %s works", p)
			} else if errnoOf(err) != syscall.ENOENT {
				t.Errorf("open %s: %v, want ENOENT", p, err)
			}
		}
		if err := os.Rename(ks, ks+"2"); err == nil {
			t.Errorf("rename %s works", ks)
		}
		if _, err := os.Stat(e.ksDir()); err != nil {
			t.Fatalf("keystore gone from the disk: %v", err)
		}
	}
	hidden(t, "a")
	if err := os.Rename(filepath.Join(e.mnt, "a"), filepath.Join(e.mnt, "b")); err != nil {
		t.Fatalf("mv /a /b: %v", err)
	}
	e.keystore = filepath.Join(e.backing, "b", "ks")
	hidden(t, "b")
	e.run("key", "create", "--mount", e.mnt, "after-move") // the daemon still writes its keystore
	e.remount()
	hidden(t, "b")
	if out := e.run("key", "list", "--mount", e.mnt); !strings.Contains(out, "after-move") {
		t.Errorf("key made after the move is gone: %s", out)
	}

	t.Run("default keystore", func(t *testing.T) {
		d := newEnv(t)
		ks := filepath.Join(d.backing, ".ezfs")
		var kst, ust unix.Stat_t
		if err := unix.Lstat(ks, &kst); err != nil {
			t.Fatal(err)
		}
		upper := filepath.Join(d.mnt, ".EZFS")
		check := func(t *testing.T) {
			if _, err := os.Lstat(filepath.Join(d.mnt, ".ezfs")); errnoOf(err) != syscall.ENOENT {
				t.Errorf("stat /.ezfs: %v, want ENOENT", err)
			}
			if err := unix.Lstat(filepath.Join(d.backing, ".EZFS"), &ust); err == nil && ust.Ino == kst.Ino && ust.Dev == kst.Dev {
				// A case-insensitive backing file system: .EZFS is the keystore.
				if _, err := os.Lstat(upper); errnoOf(err) != syscall.ENOENT {
					t.Errorf("stat /.EZFS (the keystore on a case-insensitive disk): %v, want ENOENT", err)
				}
				return
			}
			// Case-sensitive: .EZFS is an ordinary name.
			if err := os.MkdirAll(upper, 0o755); err != nil {
				t.Fatalf("mkdir /.EZFS: %v", err)
			}
			if err := os.WriteFile(filepath.Join(upper, "mine"), []byte("ordinary"), 0o644); err != nil {
				t.Fatal(err)
			}
			ents, err := os.ReadDir(d.mnt)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, x := range ents {
				names = append(names, x.Name())
			}
			if strings.Join(names, " ") != ".EZFS" {
				t.Errorf("ls /: %q, want only .EZFS", names)
			}
			if unix.Lstat(filepath.Join(d.backing, ".EZFS"), &ust) != nil || ust.Ino == kst.Ino {
				t.Errorf("/.EZFS is not a directory of its own on the disk")
			}
			if _, err := os.Stat(filepath.Join(ks, "mine")); err == nil {
				t.Errorf("a file written to /.EZFS landed in the keystore")
			}
		}
		check(t)
		d.remount()
		check(t)
	})
}
