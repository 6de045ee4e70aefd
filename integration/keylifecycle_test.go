package integration

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ezfs/ezfs/control"
	"golang.org/x/sys/unix"
)

// TestKeyDisable (issue 15, criterion 1): a disabled zone key stops its zone within a
// second, for files already open and read (their data key and pages cached) as for new
// opens and creates, with EACCES and a log line; another zone keeps working; enabled
// again, everything works, with no remount.
func TestKeyDisable(t *testing.T) {
	e := newEnv(t)
	za, zb := e.zone("za", "ka"), e.zone("zb", "kb")
	writeFile(t, filepath.Join(za, "f"), "alpha data")
	writeFile(t, filepath.Join(zb, "g"), "beta data")
	f, err := os.OpenFile(filepath.Join(za, "f"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 10)
	if _, err := f.ReadAt(buf, 0); err != nil || string(buf) != "alpha data" {
		t.Fatalf("read before: %q %v", buf, err)
	}

	e.run("key", "disable", "ka", "--mount", e.mnt)
	disabled := time.Now()
	refused := map[string]func() error{
		"read of an open file":  func() error { _, err := f.ReadAt(buf, 0); return err },
		"write to an open file": func() error { _, err := f.WriteAt([]byte("X"), 0); return err },
		"open":                  func() error { _, err := os.ReadFile(filepath.Join(za, "f")); return err },
		"create":                func() error { return os.WriteFile(filepath.Join(za, "new"), []byte("x"), 0o644) },
		"truncate":              func() error { return os.Truncate(filepath.Join(za, "f"), 1) },
		"fallocate":             func() error { return unix.Fallocate(int(f.Fd()), 0, 0, 8192) },
	}
	for what, op := range refused {
		err := op()
		for errnoOf(err) != syscall.EACCES && time.Since(disabled) < time.Second {
			time.Sleep(20 * time.Millisecond)
			err = op()
		}
		if errnoOf(err) != syscall.EACCES {
			t.Errorf("%s with the key disabled: %v, want EACCES within a second", what, err)
		}
	}
	if got, err := os.ReadFile(filepath.Join(zb, "g")); err != nil || string(got) != "beta data" {
		t.Errorf("the other zone: %q %v", got, err)
	}
	writeFile(t, filepath.Join(zb, "g2"), "still served")
	if log := e.daemonLog(); !strings.Contains(log, "zone key ka is disabled") || !strings.Contains(log, `key "ka" is disabled`) {
		t.Errorf("the daemon log says nothing of the disabled key:\n%s", log)
	}
	if ki := e.describe("ka"); ki.State != "disabled" {
		t.Errorf("key describe: state %q", ki.State)
	}
	e.fails("disabled", "key", "roll", "ka", "--mount", e.mnt)
	failsCode(t, nil, control.CodeBusy, "enable it first", "reencrypt", "start", za)

	e.run("key", "enable", "ka", "--mount", e.mnt)
	if _, err := f.ReadAt(buf, 0); err != nil || string(buf) != "alpha data" {
		t.Errorf("read of the open file after enable: %q %v", buf, err)
	}
	if _, err := f.WriteAt([]byte("A"), 0); err != nil {
		t.Errorf("write after enable: %v", err)
	}
	writeFile(t, filepath.Join(za, "new"), "created after enable")
	if got := readFile(t, filepath.Join(za, "f")); got != "Alpha data" {
		t.Errorf("after enable: %q", got)
	}
	checkLifecycleAudit(t, e, [][2]string{{"key.disable", "ok"}, {"key.roll", "error"}, {"key.enable", "ok"}})
}

// TestKeyDeleteRecoverPurge (issue 15, criterion 2): delete is refused while a zone uses
// the key, naming the zone; once the zone is gone the key is deleted (its name stays
// reserved), listed with its purge date, recovered, deleted again and purged; purge
// before the date needs --force and a scan of the whole backing that finds no file
// that may be under the key. Every step is audited.
func TestKeyDeleteRecoverPurge(t *testing.T) {
	e := newEnv(t)
	e.umount()
	e.run("mount", e.backing, e.mnt, "--test-min-retention", "1s")
	z := e.zone("zd", "kd")
	e.zone("zo", "ko")
	writeFile(t, filepath.Join(z, "f"), "data under kd")
	failsCode(t, nil, control.CodeBusy, "used by zone /zd", "key", "delete", "kd", "--mount", e.mnt)

	// The zone goes (rmdir of its empty root), but one of its files is moved away on
	// the backing disk: a v2 EDEK does not say its key.
	stray := filepath.Join(e.backing, "stray")
	if err := os.Rename(e.backingOf(filepath.Join(z, "f")), stray); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(z); err != nil {
		t.Fatalf("rmdir of the empty zone: %v", err)
	}
	e.run("key", "delete", "kd", "--mount", e.mnt)
	ki := e.describe("kd")
	if ki.State != "deleted" || ki.PurgeAfter == nil || ki.Deleted == nil ||
		ki.PurgeAfter.Sub(*ki.Deleted) != 7*24*time.Hour || time.Since(*ki.Deleted) > time.Minute {
		t.Errorf("deleted key: %+v", ki.KeyLifecycle)
	}
	if out := e.run("key", "list", "--mount", e.mnt); !strings.Contains(out, "purge date") {
		t.Errorf("key list does not show the purge date:\n%s", out)
	}
	failsCode(t, nil, control.CodeBusy, "reserved", "key", "create", "kd", "--mount", e.mnt)
	if err := os.Mkdir(filepath.Join(e.mnt, "zn"), 0o755); err != nil {
		t.Fatal(err)
	}
	failsCode(t, nil, control.CodeBusy, "is deleted", "zone", "create", filepath.Join(e.mnt, "zn"), "--key", "kd")

	e.run("key", "recover", "kd", "--mount", e.mnt)
	if ki := e.describe("kd"); ki.State != "disabled" || ki.PurgeAfter != nil {
		t.Errorf("recovered key: %+v", ki.KeyLifecycle)
	}
	failsCode(t, nil, control.CodeUsage, "shorter than the minimum", "key", "delete", "kd", "--retention", "500ms", "--mount", e.mnt)
	e.run("key", "delete", "kd", "--retention", "1h", "--mount", e.mnt)
	failsCode(t, nil, control.CodeBusy, "--force", "key", "purge", "kd", "--mount", e.mnt)
	failsCode(t, nil, control.CodeBusy, "1 files outside every zone", "key", "purge", "kd", "--force", "--mount", e.mnt)
	if err := os.Remove(stray); err != nil {
		t.Fatal(err)
	}
	e.run("key", "purge", "kd", "--force", "--mount", e.mnt)

	// A key past its retention window is purged without --force.
	e.run("key", "create", "kw", "--mount", e.mnt)
	e.run("key", "delete", "kw", "--retention", "1s", "--mount", e.mnt)
	time.Sleep(1100 * time.Millisecond)
	// Past the date too, purge scans: an EDEK it cannot read may be under kw. The
	// state is checked before any scan.
	garbled := filepath.Join(e.backing, "garbled")
	if err := os.WriteFile(garbled, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(garbled, "user.ezfs.edek", []byte("not an EDEK record"), 0); err != nil {
		t.Fatal(err)
	}
	failsCode(t, nil, control.CodeCorrupt, "1 files have an EDEK this ezfs cannot read", "key", "purge", "kw", "--mount", e.mnt)
	failsCode(t, nil, control.CodeBusy, "cannot purge a key that is active", "key", "purge", "ko", "--force", "--mount", e.mnt)
	if err := os.Remove(garbled); err != nil {
		t.Fatal(err)
	}
	e.run("key", "purge", "kw", "--mount", e.mnt)

	var keys []control.KeyInfo
	decodeJSON(t, e.run("key", "list", "--json", "--mount", e.mnt), &keys)
	states := map[string]string{}
	for _, k := range keys {
		states[k.Name] = k.State
		if k.State == "purged" && k.Purged == nil {
			t.Errorf("purged key %s without its purge time", k.Name)
		}
	}
	if want := map[string]string{"kd": "purged", "ko": "active", "kw": "purged"}; !maps.Equal(states, want) {
		t.Errorf("key list --json states: %v, want %v", states, want)
	}
	failsCode(t, nil, control.CodeBusy, "reserved", "key", "create", "kd", "--mount", e.mnt)
	checkLifecycleAudit(t, e, [][2]string{{"key.delete", "error"}, {"zone.remove", "ok"}, {"key.delete", "ok"}, {"key.recover", "ok"},
		{"key.delete", "error"}, {"key.delete", "ok"}, {"key.purge", "error"}, {"key.purge", "error"}, {"key.purge", "ok"},
		{"key.delete", "ok"}, {"key.purge", "error"}, {"key.purge", "error"}, {"key.purge", "ok"}})
}

// TestKeyRetireVersion (issue 15, criterion 3): a version is retired only when a fresh
// scan finds no file on it (not the last job's counts), no job runs on the key's zones
// and no open file is on it (unlinked or O_TMPFILE files, which the scan cannot see),
// never the latest; the files still read afterwards. Retire is soft: a file on the
// retired version found later reads again after 'key recover NAME@N'; 'key purge
// NAME@N' destroys the material, after the same checks, for good.
func TestKeyRetireVersion(t *testing.T) {
	e := newEnv(t)
	z := e.zone("zr", "kr")
	for _, n := range []string{"a", "b", "c"} {
		writeFile(t, filepath.Join(z, n), "old "+n)
	}
	// Open files on @1 that no scan sees.
	tmp, err := unix.Open(z, unix.O_TMPFILE|unix.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { unix.Close(tmp) }()
	writeFile(t, filepath.Join(z, "u"), "unlinked")
	u, err := os.Open(filepath.Join(z, "u"))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if err := os.Remove(filepath.Join(z, "u")); err != nil {
		t.Fatal(err)
	}
	e.run("key", "roll", "kr", "--mount", e.mnt)
	writeFile(t, filepath.Join(z, "d"), "new d")
	failsCode(t, nil, control.CodeBusy, "2 open files are under kr@1", "key", "retire", "kr@1", "--mount", e.mnt)
	u.Close()
	unix.Close(tmp)
	failsCode(t, nil, control.CodeBusy, "3 files still reference kr@1", "key", "retire", "kr@1", "--mount", e.mnt)
	failsCode(t, nil, control.CodeBusy, "latest version", "key", "retire", "kr@2", "--mount", e.mnt)
	failsCode(t, nil, control.CodeUsage, "NAME@VERSION", "key", "retire", "kr", "--mount", e.mnt)
	old := rawEDEK(t, e.backingOf(filepath.Join(z, "a")))
	e.run("reencrypt", "start", "--rate", "1", z)
	failsCode(t, nil, control.CodeBusy, "a reencryption job is running on zone /zr", "key", "retire", "kr@1", "--mount", e.mnt)
	e.run("reencrypt", "cancel", z)
	e.run("reencrypt", "start", "--wait", z)
	// The job counted no file on @1; a record put back on the disk since is found.
	putEDEK := func() {
		t.Helper()
		if err := unix.Lsetxattr(e.backingOf(filepath.Join(z, "a")), "user.ezfs.edek", old, unix.XATTR_REPLACE); err != nil {
			t.Fatal(err)
		}
	}
	putEDEK()
	failsCode(t, nil, control.CodeBusy, "1 files still reference kr@1", "key", "retire", "kr@1", "--mount", e.mnt)
	e.run("reencrypt", "start", "--wait", z)
	e.run("key", "retire", "kr@1", "--mount", e.mnt)
	if ki := e.describe("kr"); ki.Versions[0].State != "retired" || ki.Versions[1].State != "active" {
		t.Errorf("versions after retire: %+v", ki.Versions)
	}
	failsCode(t, nil, control.CodeBusy, "it is retired", "key", "retire", "kr@1", "--mount", e.mnt)
	check := func(when string) {
		t.Helper()
		for n, want := range map[string]string{"a": "old a", "b": "old b", "c": "old c", "d": "new d"} {
			if got := readFile(t, filepath.Join(z, n)); got != want {
				t.Errorf("%s: %s reads %q", when, n, got)
			}
		}
	}
	check("after retire")
	e.remount() // no cached key: nothing may need @1
	check("after a remount")

	// A file on @1 turns up after all (a copy put back): it does not read, nothing is
	// lost; recovered, the version serves it again.
	putEDEK()
	e.remount()
	if _, err := os.ReadFile(filepath.Join(z, "a")); err == nil {
		t.Error("a file on a retired version reads")
	}
	failsCode(t, nil, control.CodeBusy, "1 files still reference kr@1", "key", "purge", "kr@1", "--mount", e.mnt)
	e.run("key", "recover", "kr@1", "--mount", e.mnt)
	check("after recover")
	e.run("reencrypt", "start", "--wait", z)
	e.run("key", "retire", "kr@1", "--mount", e.mnt)
	e.run("key", "purge", "kr@1", "--mount", e.mnt)
	if ki := e.describe("kr"); ki.Versions[0].State != "purged" {
		t.Errorf("versions after purge: %+v", ki.Versions)
	}
	failsCode(t, nil, control.CodeBusy, "it is purged", "key", "recover", "kr@1", "--mount", e.mnt)
	e.remount()
	check("after purge")
	checkLifecycleAudit(t, e, [][2]string{{"key.retire", "error"}, {"key.retire", "error"}, {"key.retire", "error"}, {"key.retire", "error"},
		{"key.retire", "error"}, {"key.retire", "ok"}, {"key.retire", "error"},
		{"key.purge", "error"}, {"key.recover", "ok"}, {"key.retire", "ok"}, {"key.purge", "ok"}, {"key.recover", "error"}})
}

// TestKMSRetireGuard (issue 15, criterion 4): a main key version is not retired while
// a zone key version is wrapped only under it; the refusal names them all. A retired
// zone key version keeps its material (kms rewrap leaves it): it counts until purged.
func TestKMSRetireGuard(t *testing.T) {
	e := newEnv(t)
	z := e.zone("zk", "kk")
	writeFile(t, filepath.Join(z, "f"), "under kk@1")
	e.run("key", "create", "kj", "--mount", e.mnt)
	e.run("key", "create", "kv", "--mount", e.mnt)
	e.run("key", "roll", "kv", "--mount", e.mnt)
	e.run("key", "retire", "kv@1", "--mount", e.mnt)
	e.run("kms", "rotate", "--mount", e.mnt)
	e.run("key", "roll", "kk", "--mount", e.mnt)
	e.run("key", "disable", "kj", "--mount", e.mnt)
	failsCode(t, nil, control.CodeBusy, "still wraps kj@1, kk@1, kv@1, kv@2,", "kms", "retire", "default", "1", "--mount", e.mnt)
	e.run("kms", "rewrap", "--mount", e.mnt) // a disabled key unwraps nothing, nor a retired version
	failsCode(t, nil, control.CodeBusy, "still wraps kj@1, kv@1,", "kms", "retire", "default", "1", "--mount", e.mnt)
	e.run("key", "enable", "kj", "--mount", e.mnt)
	e.run("kms", "rewrap", "--mount", e.mnt)
	failsCode(t, nil, control.CodeBusy, "still wraps kv@1,", "kms", "retire", "default", "1", "--mount", e.mnt)
	e.run("key", "purge", "kv@1", "--mount", e.mnt)
	e.run("kms", "retire", "default", "1", "--mount", e.mnt)
	e.remount()
	if got := readFile(t, filepath.Join(z, "f")); got != "under kk@1" {
		t.Errorf("after retiring default v1: %q", got)
	}
}

// checkLifecycleAudit checks that the audit log's key lifecycle lines (and zone removals) are,
// in order, want (op and result).
func checkLifecycleAudit(t *testing.T, e *env, want [][2]string) {
	t.Helper()
	var got [][2]string
	for _, line := range strings.Split(strings.TrimSpace(readFile(t, filepath.Join(e.ksDir(), "audit.log"))), "\n") {
		var rec struct {
			Op, Result, Key string
			Main            string `json:"main_key"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		if strings.HasPrefix(rec.Op, "key.") && (rec.Key == "" || rec.Main != "default") {
			t.Errorf("audit line without its key and main key: %s", line)
		}
		switch rec.Op {
		case "key.disable", "key.enable", "key.delete", "key.recover", "key.purge", "key.retire", "zone.remove":
		case "key.roll":
			if rec.Result == "ok" {
				continue
			}
		default:
			continue
		}
		got = append(got, [2]string{rec.Op, rec.Result})
	}
	if len(got) != len(want) {
		t.Fatalf("audit log: %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("audit log: %v, want %v", got, want)
			return
		}
	}
}

// TestKeyDisableCancelsJob (issue 15, P2-13): disabling a key cancels its zones'
// running reencryption jobs, which say why (and are audited); the operator starts
// them again after enable.
func TestKeyDisableCancelsJob(t *testing.T) {
	e := newEnv(t)
	z := e.zone("zj", "kj")
	for i := 0; i < 5; i++ {
		writeFile(t, filepath.Join(z, fmt.Sprint("f", i)), "data")
	}
	e.run("key", "roll", "kj", "--mount", e.mnt)
	e.run("reencrypt", "start", "--rate", "1", z)
	e.run("key", "disable", "kj", "--mount", e.mnt)
	var jobs []control.JobStatus
	decodeJSON(t, e.run("reencrypt", "status", "--json", z), &jobs)
	if len(jobs) != 1 || jobs[0].State != "Canceled" || !strings.Contains(jobs[0].Reason, "kj was disabled") {
		t.Errorf("the job after key disable: %+v", jobs)
	}
	if audit := readFile(t, filepath.Join(e.ksDir(), "audit.log")); !strings.Contains(audit, `"reason":"zone key kj was disabled`) {
		t.Errorf("the cancel is not audited with its reason:\n%s", audit)
	}
	e.run("key", "enable", "kj", "--mount", e.mnt)
	e.run("reencrypt", "start", "--wait", z)
	decodeJSON(t, e.run("reencrypt", "status", "--json", z), &jobs)
	if len(jobs) != 1 || jobs[0].State != "Completed" {
		t.Errorf("the job started again after enable: %+v", jobs)
	}
}

// TestKeyDisableKeepsMmapWrites (issue 15, P1-7): bytes written into a shared mapping
// of a zone file before 'key disable' are not lost: the kernel writes the dirty pages
// back while the key still serves, before the daemon refuses every request.
func TestKeyDisableKeepsMmapWrites(t *testing.T) {
	e := newEnv(t)
	z := e.zone("zm", "km")
	p := filepath.Join(z, "f")
	writeFile(t, p, strings.Repeat("-", 8192))
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, 8192, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	copy(m[100:], "written through the mapping")
	e.run("key", "disable", "km", "--mount", e.mnt)
	e.run("key", "enable", "km", "--mount", e.mnt)
	if err := unix.Munmap(m); err != nil {
		t.Fatal(err)
	}
	f.Close()
	e.remount()
	if got := readFile(t, p); got[100:127] != "written through the mapping" {
		t.Errorf("after disable, enable and a remount: %q", got[90:140])
	}
}
