package integration

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/ezfs/ezfs/control"
	"github.com/ezfs/ezfs/fsck"
	"golang.org/x/sys/unix"
)

// runFsck runs ezfs fsck --json with args and extra environment variables, and returns
// its report and exit status.
func runFsck(t *testing.T, extra []string, args ...string) (*fsck.Report, int) {
	t.Helper()
	out, errOut, err := ezfsEnv(extra, append([]string{"fsck", "--json"}, args...)...)
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var rep fsck.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("ezfs fsck %s: exit %d, not a report: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, err, out, errOut)
	}
	if code != 0 && (strings.Count(strings.TrimSpace(errOut), "\n") != 0 || !strings.HasPrefix(errOut, "ezfs: ")) {
		t.Errorf("ezfs fsck: exit %d without a one-line message: %q", code, errOut)
	}
	return &rep, code
}

// problemSet is a report's problems as sorted "kind path-or-key" strings, with the
// repaired ones marked.
func problemSet(rep *fsck.Report) []string {
	var out []string
	for _, p := range rep.Problems {
		s := string(p.Kind) + " " + p.Path + p.Key
		if p.Repaired {
			s += " repaired"
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func wantProblems(t *testing.T, what string, rep *fsck.Report, want ...string) {
	t.Helper()
	sort.Strings(want)
	if got := problemSet(rep); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s: problems\n  %s\nwant\n  %s\nreport: %+v", what, strings.Join(got, "\n  "), strings.Join(want, "\n  "), rep.Problems)
	}
}

func zoneReport(t *testing.T, rep *fsck.Report, path string) fsck.ZoneReport {
	t.Helper()
	for _, z := range rep.Zones {
		if z.Path == path {
			return z
		}
	}
	t.Fatalf("no zone %s in the report: %+v", path, rep.Zones)
	return fsck.ZoneReport{}
}

func wantCounts(t *testing.T, z fsck.ZoneReport, files, links, empty, others int64, versions map[string]int64) {
	t.Helper()
	if z.Files != files || z.Links != links || z.Empty != empty || z.Others != others || !z.Checked {
		t.Errorf("zone /%s: files %d links %d empty %d others %d checked %v, want %d %d %d %d true",
			z.Path, z.Files, z.Links, z.Empty, z.Others, z.Checked, files, links, empty, others)
	}
	if len(z.Versions) != len(versions) {
		t.Errorf("zone /%s: versions %v, want %v", z.Path, z.Versions, versions)
	}
	for v, n := range versions {
		if z.Versions[v] != n {
			t.Errorf("zone /%s: versions %v, want %v", z.Path, z.Versions, versions)
		}
	}
}

// TestFsckGolden (issue 15, criterion 5): the v1 fixture, made by an old ezfs (EDEK
// records v1, a hole, a hard link, an empty file, two key versions), is clean.
func TestFsckGolden(t *testing.T) {
	d := tempDir(t)
	unpackFixture(t, filepath.Join(fixtures, "v1.tar.gz"), d)
	rep, code := runFsck(t, []string{"EZFS_PASSPHRASE=ezfs golden fixture v1"}, "--full", d)
	if code != 0 {
		t.Fatalf("fsck of the v1 fixture: exit %d: %v", code, rep.Problems)
	}
	wantProblems(t, "v1 fixture", rep)
	wantCounts(t, zoneReport(t, rep, "z"), 7, 1, 1, 0, map[string]int64{"golden@1": 6, "golden@2": 1})
	if rep.Unwraps != 2 || rep.Files != 7 || rep.Links != 1 {
		t.Errorf("unwraps %d, files %d, links %d; want 2, 7, 1", rep.Unwraps, rep.Files, rep.Links)
	}
}

// TestFsck (issue 15, criterion 5): a clean backing, then each planted problem
// reported exactly (kind and path), repair of the torn tail and the marker, and fsck
// refusing a mounted backing.
func TestFsck(t *testing.T) {
	e := newEnv(t)
	a, b := e.zone("a", "ka"), e.zone("b", "kb")
	write := func(p string, data []byte) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(a, "small"), []byte("small file"))
	write(filepath.Join(a, "empty"), nil)
	write(filepath.Join(a, "sub", "deep"), []byte(strings.Repeat("deep ", 1000)))
	hole, err := os.Create(filepath.Join(a, "hole"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hole.WriteAt([]byte("after the hole"), 3*4096+5); err != nil {
		t.Fatal(err)
	}
	hole.Close()
	if err := os.Link(filepath.Join(a, "small"), filepath.Join(a, "link")); err != nil {
		t.Fatal(err)
	}
	multi := []byte(strings.Repeat("0123456789abcdef", 3*256+10)) // 3 blocks and 160 bytes
	write(filepath.Join(b, "multi"), multi)
	if err := os.Symlink("multi", filepath.Join(b, "sl")); err != nil {
		t.Fatal(err)
	}

	// Mounted: fsck refuses, exit 2, one line, --json says busy.
	_, code := runFsckFail(t, e.backing)
	if code != 2 {
		t.Errorf("fsck of a mounted backing: exit %d, want 2", code)
	}
	e.umount()

	rep, code := runFsck(t, nil, e.backing)
	if code != 0 {
		t.Fatalf("clean backing: exit %d: %v", code, rep.Problems)
	}
	wantProblems(t, "clean", rep)
	wantCounts(t, zoneReport(t, rep, "a"), 4, 1, 1, 0, map[string]int64{"ka@1": 4})
	wantCounts(t, zoneReport(t, rep, "b"), 1, 0, 0, 1, map[string]int64{"kb@1": 1})
	if rep.Unwraps != 2 {
		t.Errorf("%d zone key versions unwrapped, want 2 (one per version in use)", rep.Unwraps)
	}
	if want := int64(10 + 5000 + 3*4096 + 5 + 14 + len(multi)); rep.Bytes != want {
		t.Errorf("bytes %d, want %d", rep.Bytes, want)
	}

	// Plant one of each problem.
	e.mount()
	c := e.zone("c", "kc")
	write(filepath.Join(c, "f"), []byte("in zone c"))
	write(filepath.Join(a, "edekbad"), []byte("its EDEK gets a flipped byte"))
	torn := []byte(strings.Repeat("t", 5000))
	write(filepath.Join(a, "torn"), torn)
	e.run("key", "roll", "--mount", e.mnt, "kb")
	e.run("key", "roll", "--mount", e.mnt, "kb") // kb@2: no file; kb@3 the newest
	e.umount()
	flipEDEK(t, filepath.Join(e.backing, "a", "edekbad"))
	flipByte(t, filepath.Join(e.backing, "b", "multi"), 22+4124+100) // in block 1
	if err := unix.Removexattr(filepath.Join(e.backing, "c"), "user.ezfs.zone"); err != nil {
		t.Fatal(err)
	}
	appendBytes(t, filepath.Join(e.backing, "a", "torn"), []byte("a torn new tail of the last block"))
	if err := os.WriteFile(filepath.Join(e.backing, "a", "plain.txt"), []byte("put on the disk directly"), 0o644); err != nil {
		t.Fatal(err)
	}
	always := []string{"bad-edek a/edekbad", "plaintext a/plain.txt", "unused-version kb@2"}
	rep, code = runFsck(t, nil, e.backing)
	wantProblems(t, "planted", rep, append(always, "marker-missing c", "torn-tail a/torn")...)
	if code != 1 {
		t.Errorf("planted problems: exit %d, want 1", code)
	}
	rep, code = runFsck(t, nil, "--full", e.backing)
	wantProblems(t, "planted, --full", rep, append(always, "marker-missing c", "torn-tail a/torn", "bad-block b/multi")...)
	for _, p := range rep.Problems {
		if p.Kind == fsck.KindBadBlock && (p.From != 4096 || p.To != 8192) {
			t.Errorf("bad block range %d-%d, want 4096-8192: %s", p.From, p.To, p.Detail)
		}
	}
	if code != 1 {
		t.Errorf("planted problems, --full: exit %d, want 1", code)
	}

	rep, code = runFsck(t, nil, "--full", "--repair", e.backing)
	wantProblems(t, "repair", rep, append(always, "marker-missing c repaired", "torn-tail a/torn repaired", "bad-block b/multi")...)
	if code != 1 || rep.Repaired != 2 {
		t.Errorf("repair: exit %d, %d repaired; want 1, 2", code, rep.Repaired)
	}
	rep, code = runFsck(t, nil, "--full", e.backing)
	wantProblems(t, "after repair", rep, append(always, "bad-block b/multi")...)
	if code != 1 || rep.Files != 4+2+1+1+1 {
		t.Errorf("after repair: exit %d, %d files", code, rep.Files)
	}
	audit, err := os.ReadFile(filepath.Join(e.ksDir(), "audit.log"))
	if err != nil || strings.Count(string(audit), `"op":"fsck.repair"`) != 2 {
		t.Errorf("audit log: want two fsck.repair records (%v)", err)
	}

	// The repaired files serve again; nothing was deleted.
	e.mount()
	if got, err := os.ReadFile(filepath.Join(a, "torn")); err != nil || string(got) != string(torn) {
		t.Errorf("a/torn after repair: %d bytes, %v", len(got), err)
	}
	if got, err := os.ReadFile(filepath.Join(c, "f")); err != nil || string(got) != "in zone c" {
		t.Errorf("c/f after repair: %q, %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(a, "plain.txt")); err != nil {
		t.Errorf("a/plain.txt: %v", err)
	}
	// Usage errors exit 2 too.
	if _, _, err := ezfs("fsck"); exitCode(err) != 2 {
		t.Errorf("fsck without BACKING: %v, want exit 2", err)
	}
}

// runFsckFail runs ezfs fsck --json on a backing that cannot be checked: a one-line
// message saying it is mounted, and the --json error with code busy.
func runFsckFail(t *testing.T, backingDir string) (string, int) {
	t.Helper()
	out, errOut, err := ezfs("fsck", "--json", backingDir)
	code := exitCode(err)
	msg := strings.TrimSpace(errOut)
	if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "ezfs: ") || !strings.Contains(msg, "is mounted at") {
		t.Errorf("fsck of a mounted backing: message %q", errOut)
	}
	var f struct {
		Error struct {
			Code     control.Code `json:"code"`
			ExitCode int          `json:"exit_code"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(out), &f); err != nil || f.Error.Code != control.CodeBusy || f.Error.ExitCode != 2 {
		t.Errorf("fsck --json of a mounted backing: %q (%v)", out, err)
	}
	return out, code
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

func flipEDEK(t *testing.T, p string) {
	t.Helper()
	rec := rawEDEK(t, p)
	rec[len(rec)-1] ^= 0x01
	if err := unix.Setxattr(p, "user.ezfs.edek", rec, 0); err != nil {
		t.Fatal(err)
	}
}

func appendBytes(t *testing.T, p string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

// fsckText runs ezfs fsck (text report) with args and returns its stdout and exit
// status; a non-zero exit comes with a one-line message.
func fsckText(t *testing.T, extra []string, args ...string) (string, int) {
	t.Helper()
	out, errOut, err := ezfsEnv(extra, append([]string{"fsck"}, args...)...)
	code := exitCode(err)
	if msg := strings.TrimSpace(errOut); code != 0 && (strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "ezfs: ")) {
		t.Errorf("ezfs fsck %s: exit %d without a one-line message: %q", strings.Join(args, " "), code, errOut)
	}
	return out, code
}

// TestFsckExitCodes (review P0-3, P3-15): fsck's exit codes 0, 1 and 2, in text and
// --json; a disabled key's files are not checked and still exit 0; a file under a
// retired version (an old copy put back) is a problem, not a failure to check; an empty
// file without an EDEK (a create cut short) is its own problem, which the mount answers
// EIO for and which goes once removed.
func TestFsckExitCodes(t *testing.T) {
	e := newEnv(t)
	a, d, r := e.zone("a", "ka"), e.zone("d", "kd"), e.zone("r", "kr")
	for _, p := range []string{filepath.Join(a, "f"), filepath.Join(d, "f"), filepath.Join(r, "old")} {
		if err := os.WriteFile(p, []byte("contents of "+p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A copy of r/old on kr@1, put back once kr@1 is retired.
	old := e.backingOf(filepath.Join(r, "old"))
	oldData, err := os.ReadFile(old)
	if err != nil {
		t.Fatal(err)
	}
	oldEDEK := rawEDEK(t, old)
	e.run("key", "roll", "--mount", e.mnt, "kr")
	if err := os.Remove(filepath.Join(r, "old")); err != nil {
		t.Fatal(err)
	}
	e.run("key", "retire", "kr@1", "--mount", e.mnt)
	e.run("key", "disable", "kd", "--mount", e.mnt)
	e.umount()

	out, code := fsckText(t, nil, e.backing)
	if code != 0 || !strings.Contains(out, "\nclean\n") || !strings.Contains(out, "1 files not checked: their key is disabled") {
		t.Errorf("a disabled key: exit %d, want 0, clean, 1 file not checked:\n%s", code, out)
	}
	rep, code := runFsck(t, nil, e.backing)
	if code != 0 || rep.NotChecked != 1 || zoneReport(t, rep, "d").NotChecked != 1 {
		t.Errorf("a disabled key, --json: exit %d, not checked %d; want 0, 1", code, rep.NotChecked)
	}
	for _, k := range rep.Keys {
		if k.Name == "kd" && k.State != "disabled" {
			t.Errorf("key kd: state %q, want disabled", k.State)
		}
	}

	// Problems: exit 1, in text as in --json.
	if err := os.WriteFile(old, oldData, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(old, "user.ezfs.edek", oldEDEK, 0); err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(e.backing, "a", "cut")
	if err := os.WriteFile(cut, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	appendBytes(t, filepath.Join(e.backing, "a", "f"), []byte("torn"))
	if out, code := fsckText(t, nil, e.backing); code != 1 || !strings.Contains(out, "interrupted-create: /a/cut") {
		t.Errorf("problems: exit %d, want 1:\n%s", code, out)
	}
	rep, code = runFsck(t, nil, "--repair", e.backing)
	wantProblems(t, "problems, repair", rep, "bad-edek r/old", "interrupted-create a/cut", "torn-tail a/f repaired")
	if code != 1 {
		t.Errorf("problems left after --repair: exit %d, want 1", code)
	}
	for _, p := range rep.Problems {
		if p.Path == "r/old" && !strings.Contains(p.Detail, "kr@1, which is retired") {
			t.Errorf("r/old: %s", p.Detail)
		}
	}

	// The mount answers EIO for the cut create; once it and the old copy are removed,
	// exit 0.
	e.mount()
	if _, err := os.ReadFile(filepath.Join(a, "cut")); errnoOf(err) != unix.EIO {
		t.Errorf("open of a/cut through the mount: %v, want EIO", err)
	}
	for _, p := range []string{filepath.Join(a, "cut"), filepath.Join(r, "old")} {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	e.umount()
	appendBytes(t, filepath.Join(e.backing, "a", "f"), []byte("torn again"))
	if _, code := fsckText(t, nil, "--repair", e.backing); code != 0 {
		t.Errorf("every problem repaired: exit %d, want 0", code)
	}
	if _, code := fsckText(t, nil, e.backing); code != 0 {
		t.Errorf("after repair: exit %d, want 0", code)
	}

	// Could not check: exit 2.
	if _, code := fsckText(t, []string{"EZFS_PASSPHRASE=not the passphrase"}, e.backing); code != 2 {
		t.Errorf("a wrong passphrase: exit %d, want 2", code)
	}
	if _, code := fsckText(t, nil, tempDir(t)); code != 2 {
		t.Errorf("no keystore: exit %d, want 2", code)
	}
}
