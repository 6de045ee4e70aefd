package fsck_test

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ezfs/ezfs/fsck"
	"github.com/ezfs/ezfs/keystore"
	"github.com/ezfs/ezfs/zones/zonetest"
	"golang.org/x/sys/unix"
)

// counting counts the unwraps a provider is asked for.
type counting struct {
	keystore.Provider
	n *atomic.Int64
}

func (c counting) Decrypt(ctx context.Context, mk *keystore.MainKey, ct []byte) ([]byte, error) {
	c.n.Add(1)
	return c.Provider.Decrypt(ctx, mk, ct)
}

// check runs fsck on fx through a provider that counts its unwraps.
func check(t *testing.T, fx *zonetest.Fixture, o fsck.Options) (*fsck.Report, int64) {
	t.Helper()
	fx.Close()
	var n atomic.Int64
	o.Backing, o.Keystore = fx.Backing, fx.KeystoreDir
	o.Opener = func(ctx context.Context, mk *keystore.MainKey) (keystore.Provider, error) {
		sys, err := keystore.UnlockSystem([]*keystore.MainKey{mk}, []byte(zonetest.Passphrase))
		return counting{sys, &n}, err
	}
	rep, err := fsck.Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return rep, n.Load()
}

func kinds(rep *fsck.Report) string {
	var out []string
	for _, p := range rep.Problems {
		out = append(out, string(p.Kind)+" "+p.Path+p.Key)
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// Symlinks (to files and directories outside the backing dir), a FIFO and a device
// node inside a zone are counted as what they are, never opened, followed or repaired.
func TestHostileEntries(t *testing.T) {
	fx := zonetest.New(t, "k")
	fx.AddFiles(t, 3, []byte("contents"))
	zone := filepath.Join(fx.Backing, fx.ZonePath)
	outside := filepath.Join(t.TempDir(), "outside")
	if err := os.WriteFile(outside, []byte("not ezfs"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"evil": outside, "evildir": filepath.Dir(outside), "d000/up": "../../.."} {
		if err := os.Symlink(target, filepath.Join(zone, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mkfifo(filepath.Join(zone, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(zone, "null"), unix.S_IFCHR|0o644, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	rep, _ := check(t, fx, fsck.Options{Full: true, Repair: true})
	if len(rep.Problems) != 0 || rep.Files != 3 || rep.Others != 5 {
		t.Errorf("files %d, others %d, problems %s; want 3, 5, none", rep.Files, rep.Others, kinds(rep))
	}
	if b, err := os.ReadFile(outside); err != nil || string(b) != "not ezfs" {
		t.Errorf("the file outside: %q, %v", b, err)
	}
}

// Every zone key version in use is unwrapped once, however many files use it; an
// older version no file references is unused, the newest one never is.
func TestVersions(t *testing.T) {
	fx := zonetest.New(t, "k")
	fx.AddFiles(t, 50, []byte("v1"))
	if _, err := fx.Store.RollZoneKey("k"); err != nil {
		t.Fatal(err)
	}
	fx.AddFiles(t, 20, nil) // on k@2, over the same names: k@1 keeps 30
	rep, unwraps := check(t, fx, fsck.Options{})
	if unwraps != 2 || rep.Unwraps != 2 || kinds(rep) != "" {
		t.Fatalf("unwraps %d (report %d), problems %s; want 2, 2, none", unwraps, rep.Unwraps, kinds(rep))
	}
	if v := rep.Zones[0].Versions; v["k@1"] != 30 || v["k@2"] != 20 || rep.Zones[0].Empty != 20 {
		t.Errorf("versions %v, empty %d", v, rep.Zones[0].Empty)
	}

	fx2 := zonetest.New(t, "k")
	fx2.AddFiles(t, 5, nil)
	if _, err := fx2.Store.RollZoneKey("k"); err != nil {
		t.Fatal(err)
	}
	if rep, _ := check(t, fx2, fsck.Options{}); kinds(rep) != "" {
		t.Errorf("right after a roll: %s, want none (the newest version has no file yet)", kinds(rep))
	}
	fx3 := zonetest.New(t, "k")
	fx3.AddFiles(t, 5, nil)
	for i := 0; i < 2; i++ {
		if _, err := fx3.Store.RollZoneKey("k"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := fx3.Store.CreateZoneKey("spare", ""); err != nil {
		t.Fatal(err)
	}
	if rep, _ := check(t, fx3, fsck.Options{}); kinds(rep) != "unused-key spare, unused-version k@2" {
		t.Errorf("two rolls and a spare key: %s", kinds(rep))
	}
}

// Torn tails of each shape are found and cut to the last intact block; a file shorter
// than the header that is not a prefix of its own header is bad-header, never cut.
func TestTornTails(t *testing.T) {
	fx := zonetest.New(t, "k")
	fx.AddFiles(t, 5, make([]byte, 5000))
	f := func(i int) string {
		return filepath.Join(fx.Backing, fx.ZonePath, "d00"+string(rune('0'+i)), "f00000"+string(rune('0'+i)))
	}
	var sizes []int64
	for i := 0; i < 4; i++ {
		st, err := os.Stat(f(i))
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, st.Size())
	}
	// 0: a new tail of the last block written past it; 1: a few bytes past the last
	// block (too few to be one); 2: the header cut short; 3 stays whole; 4: 7 bytes
	// that are not its header's first (not a torn write).
	appendTo(t, f(0), make([]byte, 100))
	appendTo(t, f(1), make([]byte, 10))
	if err := os.Truncate(f(1), sizes[1]-932+10); err != nil { // whole block 0, 10 bytes of block 1
		t.Fatal(err)
	}
	if err := os.Truncate(f(2), 7); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f(4), []byte("EZFS\x00\x02x"), 0o644); err != nil {
		t.Fatal(err)
	}
	rep, _ := check(t, fx, fsck.Options{Repair: true})
	want := "bad-header zone/d004/f000004, torn-tail zone/d000/f000000, torn-tail zone/d001/f000001, torn-tail zone/d002/f000002"
	if kinds(rep) != want || rep.Repaired != 3 {
		t.Fatalf("problems %s (%d repaired), want %s", kinds(rep), rep.Repaired, want)
	}
	for i, want := range []int64{sizes[0], 22 + 4124, 0, sizes[3], 7} {
		if st, err := os.Stat(f(i)); err != nil || st.Size() != want {
			t.Errorf("file %d after repair: size %d (%v), want %d", i, st.Size(), err, want)
		}
	}
	if rep, _ := check(t, fx, fsck.Options{Full: true}); kinds(rep) != "bad-header zone/d004/f000004" {
		t.Errorf("after repair: %s", kinds(rep))
	}
}

func appendTo(t *testing.T, p string, b []byte) {
	t.Helper()
	fh, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := fh.Write(b); err != nil {
		t.Fatal(err)
	}
}

// TestKeyStates (review P0-3, P1-6): files under a retired version (its material kept
// or destroyed) or a purged key are bad-edek each; files under a disabled or deleted
// key are counted, not checked, and nothing is unwrapped for them; a deleted or purged
// key is never unused. None of it stops the run.
func TestKeyStates(t *testing.T) {
	fx := zonetest.New(t, "k")
	fx.AddFiles(t, 2, []byte("on k@1"))
	for _, name := range []string{"soft", "dis", "del", "pur", "spare-del", "spare-pur"} {
		if _, err := fx.Store.CreateZoneKey(name, ""); err != nil {
			t.Fatal(err)
		}
	}
	fx.AddFilesUnder(t, 1, "soft", []byte("on soft@1"))
	for _, name := range []string{"k", "soft"} {
		if _, err := fx.Store.RollZoneKey(name); err != nil {
			t.Fatal(err)
		}
	}
	fx.AddFiles(t, 1, []byte("on k@2")) // over d000/f000000: k@1 keeps one file
	for _, name := range []string{"dis", "del", "pur"} {
		fx.AddFilesUnder(t, 1, name, []byte("under "+name))
	}
	// k@1 retired and purged (material destroyed), soft@1 retired (material kept).
	for _, r := range []struct {
		name string
		ops  []keystore.VersionOp
	}{{"k", []keystore.VersionOp{keystore.VersionRetire, keystore.VersionPurge}}, {"soft", []keystore.VersionOp{keystore.VersionRetire}}} {
		for _, op := range r.ops {
			if _, err := fx.Store.ChangeVersionState(r.name, 1, op); err != nil {
				t.Fatal(err)
			}
		}
	}
	ops := map[string][]keystore.LifecycleOp{"dis": {keystore.OpDisable}, "del": {keystore.OpDelete},
		"pur": {keystore.OpDelete, keystore.OpPurge}, "spare-del": {keystore.OpDelete}, "spare-pur": {keystore.OpDelete, keystore.OpPurge}}
	for name, list := range ops {
		for _, op := range list {
			if _, err := fx.Store.ChangeKeyState(name, op, keystore.LifecycleOptions{Force: true}); err != nil {
				t.Fatal(err)
			}
		}
	}
	rep, unwraps := check(t, fx, fsck.Options{Full: true})
	want := "bad-edek zone/d000/pur000000, bad-edek zone/d000/soft000000, bad-edek zone/d001/f000001, unused-key dis, unused-key soft"
	if kinds(rep) != want {
		t.Errorf("problems %s, want %s", kinds(rep), want)
	}
	for _, p := range rep.Problems {
		if p.Kind == fsck.KindBadEDEK && (!strings.Contains(p.Detail, "unreadable") ||
			strings.HasSuffix(p.Path, "soft000000") != strings.Contains(p.Detail, "material is kept")) {
			t.Errorf("%s: %s", p.Path, p.Detail)
		}
	}
	if rep.Files != 6 || rep.NotChecked != 2 || rep.Zones[0].NotChecked != 2 || unwraps != 1 || rep.Unwraps != 1 {
		t.Errorf("files %d, not checked %d (zone %d), unwraps %d (report %d); want 6, 2, 2, 1, 1",
			rep.Files, rep.NotChecked, rep.Zones[0].NotChecked, unwraps, rep.Unwraps)
	}
	states := map[string]string{}
	for _, k := range rep.Keys {
		states[k.Name] = k.State
	}
	if states["dis"] != "disabled" || states["del"] != "deleted" || states["pur"] != "purged" || states["k"] != "active" {
		t.Errorf("key states %v", states)
	}
}

// TestPrintable (review P2-14): a name from the disk with a newline, an escape sequence
// or invalid UTF-8 is quoted in a problem's text line, so it cannot forge report lines;
// a printable one is left as it is.
func TestPrintable(t *testing.T) {
	cases := []struct{ path, want string }{
		{"zone/plain name.txt", "plaintext: /zone/plain name.txt: d"},
		{"zone/x\nplaintext: /zone/forged", `plaintext: "/zone/x\nplaintext: /zone/forged": d`},
		{"zone/\x1b[2Kgone", `plaintext: "/zone/\x1b[2Kgone": d`},
		{"zone/\xff", `plaintext: "/zone/\xff": d`},
		{"zone/ünïcode", "plaintext: /zone/ünïcode: d"},
	}
	for _, c := range cases {
		got := fsck.Problem{Kind: fsck.KindPlaintext, Path: c.path, Detail: "d"}.String()
		if got != c.want || strings.ContainsAny(got, "\n\x1b") {
			t.Errorf("%q: %s, want %s", c.path, got, c.want)
		}
	}
	if got := fsck.Printable(`"quoted"`); got != `"\"quoted\""` {
		t.Errorf("a name starting with a quote: %s", got)
	}
	if got := (fsck.Problem{Kind: fsck.KindBadEDEK, Path: "z/f", Detail: "open z/a\nb: no"}).String(); strings.Contains(got, "\n") {
		t.Errorf("a detail naming a file: %q", got)
	}
}

// TestInterruptedCreate (review P3-15): an empty file without an EDEK is a create cut
// short, not data stored in the clear; a non-empty one is plaintext. Neither is touched.
func TestInterruptedCreate(t *testing.T) {
	fx := zonetest.New(t, "k")
	fx.AddFiles(t, 1, []byte("sealed"))
	zone := filepath.Join(fx.Backing, fx.ZonePath)
	for name, b := range map[string][]byte{"cut": nil, "clear": []byte("in the clear")} {
		if err := os.WriteFile(filepath.Join(zone, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rep, _ := check(t, fx, fsck.Options{Repair: true})
	if want := "interrupted-create zone/cut, plaintext zone/clear"; kinds(rep) != want || rep.Repaired != 0 || rep.Clean() {
		t.Errorf("problems %s (%d repaired), want %s, none repaired", kinds(rep), rep.Repaired, want)
	}
	if _, err := os.Stat(filepath.Join(zone, "cut")); err != nil {
		t.Errorf("the empty file: %v", err)
	}
}
