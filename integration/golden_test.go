package integration

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ezfs/ezfs/control"
	"golang.org/x/sys/unix"
)

// The golden fixtures (testdata/README.md): backing directories with their keystores,
// written through a mount by the ezfs of each EDEK format. Every later ezfs must read
// them back byte-identical, and reencrypt upgrades them to the current format.

const fixtures = "../testdata"

// TestGoldenV1: the fixture written by the ezfs of EDEK format v1 mounts, every file
// reads back as written, file info says v1; `reencrypt start --wait` rewrites every
// record as v2 (counted as upgraded_v1), and the files still read the same, the hard
// link still one inode, before and after a remount.
func TestGoldenV1(t *testing.T) { testGolden(t, "v1", 1) }

// TestGoldenV2: the same for the fixture of format v2, whose records reencrypt only
// moves to the newest key version.
func TestGoldenV2(t *testing.T) { testGolden(t, "v2", 2) }

func testGolden(t *testing.T, name string, format int) {
	d := tempDir(t)
	e := &env{t: t, backing: filepath.Join(d, "backing"), mnt: filepath.Join(d, "mnt")}
	for _, p := range []string{e.backing, e.mnt} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	unpackFixture(t, filepath.Join(fixtures, name+".tar.gz"), e.backing)
	want := readSums(t, filepath.Join(fixtures, name+".sha256"))
	infos := readInfos(t, filepath.Join(fixtures, name+".info.jsonl"))

	// The unpacking kept what the format relies on: the attributes and the hole.
	for p := range infos {
		rec := rawEDEK(t, filepath.Join(e.backing, p))
		if got := recordFormat(rec); got != format {
			t.Fatalf("%s: unpacked record is format %d (%x), want %d", p, got, rec, format)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(e.backing, "z/hole.bin"), &st); err != nil || st.Blocks*512 >= st.Size {
		t.Errorf("z/hole.bin unpacked without its hole: %d blocks for %d bytes (%v)", st.Blocks, st.Size, err)
	}

	pass := filepath.Join(d, "passphrase")
	if err := os.WriteFile(pass, []byte("ezfs golden fixture "+name), 0o600); err != nil {
		t.Fatal(err)
	}
	mount := func() { e.run("mount", e.backing, e.mnt, "--passphrase-file", pass) }
	mount()
	t.Cleanup(e.cleanup)

	// readAll checks every file through the mount against the manifest, and the hard
	// link.
	readAll := func(stage string) {
		t.Helper()
		got := map[string]string{}
		err := filepath.WalkDir(e.mnt, func(p string, de fs.DirEntry, err error) error {
			if err != nil || !de.Type().IsRegular() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			rel, _ := filepath.Rel(e.mnt, p)
			got[rel] = hex.EncodeToString(sum[:])
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", stage, err)
		}
		if !maps.Equal(got, want) {
			t.Fatalf("%s: files read through the mount differ from the manifest:\ngot  %v\nwant %v", stage, got, want)
		}
		var a, b unix.Stat_t
		if unix.Stat(filepath.Join(e.mnt, "z/linked.txt"), &a) != nil || unix.Stat(filepath.Join(e.mnt, "z/sub/nested.txt"), &b) != nil ||
			a.Ino != b.Ino || a.Nlink != 2 {
			t.Errorf("%s: z/linked.txt and z/sub/nested.txt are not one inode with two names: %d/%d, nlink %d", stage, a.Ino, b.Ino, a.Nlink)
		}
		if fi := e.fileInfo(filepath.Join(e.mnt, "plain/outside.txt")); fi.Encrypted {
			t.Errorf("%s: plain/outside.txt is encrypted: %+v", stage, fi)
		}
	}
	// checkInfo checks file info of every zone file: its format, key version and the
	// file ID it was made with.
	checkInfo := func(stage string, format int, version func(orig uint32) uint32) {
		t.Helper()
		for p, orig := range infos {
			fi := e.fileInfo(filepath.Join(e.mnt, p))
			if !fi.Encrypted || fi.EDEKFormat != format || fi.FileID != orig.FileID || fi.Key != "golden" ||
				fi.KeyVersion != version(orig.KeyVersion) || fi.ZoneID != orig.ZoneID {
				t.Errorf("%s: file info of %s: %+v; want format %d, golden@%d, file ID %s", stage, p, fi,
					format, version(orig.KeyVersion), orig.FileID)
			}
			rec := rawEDEK(t, filepath.Join(e.backing, p))
			if recordFormat(rec) != format || (format == 2 && len(rec) > 60) {
				t.Errorf("%s: %s: record of %d bytes %x", stage, p, len(rec), rec)
			}
		}
	}
	same := func(v uint32) uint32 { return v }
	readAll("as made")
	checkInfo("as made", format, same)

	// Seven inodes in the zone (eight names), six of them at golden@1, one at @2.
	zone := filepath.Join(e.mnt, "z")
	e.run("reencrypt", "start", "--wait", zone)
	j := e.job(zone)
	wantUpgraded, wantRewrapped := int64(0), int64(6)
	if format == 1 {
		wantUpgraded, wantRewrapped = 7, 7 // golden@2 in v1 is not current either
	}
	if j.State != "Completed" || j.Files != 7 || j.ExtraLinks != 1 || j.Reencrypted != wantRewrapped ||
		j.UpgradedV1 != wantUpgraded || j.AlreadyCurrent != 7-wantRewrapped || j.Failures != 0 || j.Target != 2 {
		t.Errorf("reencrypt: %+v; want 7 files, %d re-encrypted, %d upgraded from v1", j, wantRewrapped, wantUpgraded)
	}
	if out := e.run("reencrypt", "status", "--json", zone); !strings.Contains(out, `"upgraded_v1": `) {
		t.Errorf("reencrypt status --json has no upgraded_v1: %s", out)
	}
	two := func(uint32) uint32 { return 2 }
	checkInfo("after reencrypt", 2, two)
	readAll("after reencrypt")
	if a, b := rawEDEK(t, filepath.Join(e.backing, "z/linked.txt")), rawEDEK(t, filepath.Join(e.backing, "z/sub/nested.txt")); !bytes.Equal(a, b) {
		t.Errorf("the two names of the hard link have two records")
	}

	e.umount()
	mount()
	readAll("after a remount")
	checkInfo("after a remount", 2, two)

	// A second job finds everything current.
	e.run("reencrypt", "start", "--wait", zone)
	if j := e.job(zone); j.State != "Completed" || j.Reencrypted != 0 || j.UpgradedV1 != 0 || j.AlreadyCurrent != 7 {
		t.Errorf("second reencrypt: %+v; want all 7 current", j)
	}
}

// unpackFixture unpacks a gzipped tar made with --xattrs --sparse into dir: modes,
// owners, times, hard links, user.* attributes (PAX SCHILY.xattr records), and holes
// (runs of 4 KiB of zeros are not written).
func unpackFixture(t *testing.T, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	type dirTime struct {
		path string
		hdr  *tar.Header
	}
	var dirs []dirTime
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.Clean("/"+hdr.Name))
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o700); err != nil {
				t.Fatal(err)
			}
			dirs = append(dirs, dirTime{p, hdr})
		case tar.TypeReg, tar.TypeGNUSparse:
			writeSparse(t, p, tr, hdr.Size)
		case tar.TypeLink:
			if err := os.Link(filepath.Join(dir, filepath.Clean("/"+hdr.Linkname)), p); err != nil {
				t.Fatal(err)
			}
			continue // the attributes are the inode's, set at its first name
		default:
			t.Fatalf("%s: unexpected tar entry type %q", hdr.Name, hdr.Typeflag)
		}
		for k, v := range hdr.PAXRecords {
			if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				if err := unix.Lsetxattr(p, name, []byte(v), 0); err != nil {
					t.Fatalf("%s: set %s: %v", hdr.Name, name, err)
				}
			}
		}
		if err := os.Lchown(p, hdr.Uid, hdr.Gid); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, fs.FileMode(hdr.Mode).Perm()); err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag != tar.TypeDir {
			_ = os.Chtimes(p, hdr.ModTime, hdr.ModTime)
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		_ = os.Chtimes(dirs[i].path, dirs[i].hdr.ModTime, dirs[i].hdr.ModTime)
	}
}

func writeSparse(t *testing.T, p string, r io.Reader, size int64) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf, zero := make([]byte, 4096), make([]byte, 4096)
	var off int64
	for off < size {
		n, err := io.ReadFull(r, buf[:min(int64(len(buf)), size-off)])
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if n < len(buf) || !bytes.Equal(buf, zero) {
			if _, err := f.WriteAt(buf[:n], off); err != nil {
				t.Fatal(err)
			}
		}
		off += int64(n)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
}

// readSums reads a sha256sum manifest ("HASH  ./path").
func readSums(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, p, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("%s: bad line %q", path, sc.Text())
		}
		out[filepath.Clean(p)] = sum
	}
	if len(out) == 0 {
		t.Fatalf("%s: empty", path)
	}
	return out
}

// readInfos reads the file info of every zone file of a fixture, by mount-relative
// path.
func readInfos(t *testing.T, path string) map[string]control.FileInfo {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]control.FileInfo{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var fi control.FileInfo
		if err := json.Unmarshal([]byte(line), &fi); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out[strings.TrimPrefix(fi.Path, "/")] = fi
	}
	return out
}

// rawEDEK is the EDEK record on a backing file.
func rawEDEK(t *testing.T, backing string) []byte {
	t.Helper()
	buf := make([]byte, 512)
	n, err := unix.Lgetxattr(backing, "user.ezfs.edek", buf)
	if err != nil {
		t.Fatalf("EDEK of %s: %v", backing, err)
	}
	return buf[:n]
}

// recordFormat tells a record's format from its first bytes, as the format defines
// them (not through the code under test).
func recordFormat(rec []byte) int {
	switch {
	case bytes.HasPrefix(rec, []byte("EZDK\x01")):
		return 1
	case len(rec) > 0 && rec[0] == 2:
		return 2
	}
	return 0
}
