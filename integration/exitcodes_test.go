package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ezfs/ezfs/control"
	"golang.org/x/sys/unix"
)

// failsCode runs ezfs with extra environment variables, expects exit status code and a
// one-line "ezfs: " message on stderr containing want, and returns stdout.
func failsCode(t *testing.T, extra []string, code control.Code, want string, args ...string) string {
	t.Helper()
	out, errOut, err := ezfsEnv(extra, args...)
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Errorf("ezfs %s: want exit %d (%s), got %v\nstdout: %s", strings.Join(args, " "), code.ExitCode(), code, err, out)
		return out
	}
	if ee.ExitCode() != code.ExitCode() {
		t.Errorf("ezfs %s: exit %d, want %d (%s); stderr: %s", strings.Join(args, " "), ee.ExitCode(), code.ExitCode(), code, errOut)
	}
	msg := strings.TrimSuffix(errOut, "\n")
	if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "ezfs: ") {
		t.Errorf("ezfs %s: error is not one line: %q", strings.Join(args, " "), errOut)
	}
	if !strings.Contains(msg, want) {
		t.Errorf("ezfs %s: error %q does not say %q", strings.Join(args, " "), msg, want)
	}
	return out
}

// TestExitCodes (issue 16, criterion 5): bad invocations against a real daemon, each
// with its documented exit status and a one-line message; every code is produced.
func TestExitCodes(t *testing.T) {
	e := newEnv(t)
	m := e.mnt
	zone := e.zone("z", "k")
	for i := 0; i < 40; i++ {
		if err := os.WriteFile(filepath.Join(zone, fmt.Sprintf("f%d", i)), []byte("data"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	plain := filepath.Join(m, "plain")
	full := filepath.Join(m, "full")
	above := filepath.Join(m, "above")
	for _, d := range []string{plain, full, filepath.Join(above, "inner")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(full, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	e.run("zone", "create", filepath.Join(above, "inner"), "--key", "k")
	if err := os.MkdirAll(filepath.Join(zone, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A file whose EDEK record is garbage (planted on the backing disk).
	bad := filepath.Join(zone, "bad")
	if err := os.WriteFile(bad, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(e.backingOf(bad), "user.ezfs.edek", []byte("not an EDEK record"), 0); err != nil {
		t.Fatal(err)
	}
	// A second backing dir, initialised and not mounted, and secret files.
	d := t.TempDir()
	b2, m2 := filepath.Join(d, "b2"), filepath.Join(d, "m2")
	for _, p := range []string{b2, m2} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.run("init", b2)
	wrong, empty := filepath.Join(d, "wrong"), filepath.Join(d, "empty")
	if err := os.WriteFile(wrong, []byte("not the passphrase\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	corruptB, corruptM := filepath.Join(d, "cb"), filepath.Join(d, "cm")
	for _, p := range []string{corruptB, corruptM} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.run("init", corruptB)
	if err := os.WriteFile(filepath.Join(corruptB, ".ezfs", "keystore.db"), []byte(strings.Repeat("garbage!", 2048)), 0o600); err != nil {
		t.Fatal(err)
	}
	// A running reencryption job (1 file/s) for the busy case.
	e.run("key", "roll", "--mount", m, "k")
	e.run("reencrypt", "start", "--rate", "1", zone)
	defer ezfs("reencrypt", "cancel", zone)
	// Key lifecycle: k2 at two versions, under no zone (its scan meets the bad EDEK
	// above); kx disabled.
	for _, args := range [][]string{{"key", "create", "k2"}, {"key", "roll", "k2"}, {"key", "create", "kx"}, {"key", "disable", "kx"}} {
		e.run(append(args, "--mount", m)...)
	}
	vault := []string{"VAULT_TOKEN=test-token"}
	wrongEnv := []string{"EZFS_PASSPHRASE=not the passphrase"}

	type tc struct {
		env  []string
		code control.Code
		want string
		args []string
	}
	cases := []tc{
		// usage
		{nil, control.CodeUsage, `unknown command "bogus"`, []string{"bogus"}},
		{nil, control.CodeUsage, "flag provided but not defined", []string{"status", "--bogus"}},
		{nil, control.CodeUsage, "flag provided but not defined", []string{"--bogus"}},
		{nil, control.CodeUsage, "invalid value", []string{"mount", "--key-ttl", "soon", b2, m2}},
		{nil, control.CodeUsage, "needs NAME", []string{"key", "create", "--mount", m}},
		{nil, control.CodeUsage, "needs NAME", []string{"key", "describe", "--mount", m, "a", "b"}},
		{nil, control.CodeUsage, "needs BACKING MOUNTPOINT", []string{"mount", b2}},
		{nil, control.CodeUsage, `unknown mount option "bogus"`, []string{"mount", "-o", "noatime,bogus", b2, m2}},
		{nil, control.CodeUsage, "needs --key NAME", []string{"zone", "create", plain}},
		{nil, control.CodeUsage, "--rate must not be negative", []string{"reencrypt", "start", "--rate", "-1", zone}},
		{nil, control.CodeUsage, "VERSION must be a number", []string{"kms", "retire", "--mount", m, "default", "latest"}},
		{nil, control.CodeUsage, `unknown provider "bogus"`, []string{"init", "--provider", "bogus", d}},
		{nil, control.CodeUsage, "is not a directory", []string{"mount", b2, wrong}},
		{nil, control.CodeUsage, "takes at most one ZONE", []string{"reencrypt", "status", zone, plain}},
		{nil, control.CodeUsage, "needs NAME", []string{"key", "disable", "--mount", m}},
		{nil, control.CodeUsage, "needs NAME", []string{"key", "enable", "--mount", m, "a", "b"}},
		{nil, control.CodeUsage, "not a duration", []string{"key", "delete", "--mount", m, "--retention", "soon", "k"}},
		{nil, control.CodeUsage, "shorter than the minimum", []string{"key", "delete", "--mount", m, "--retention", "1h", "kx"}},
		{nil, control.CodeUsage, "needs NAME@VERSION", []string{"key", "retire", "--mount", m, "k"}},
		{nil, control.CodeUsage, "needs NAME@VERSION", []string{"key", "purge", "--mount", m, "k@x"}},
		{nil, control.CodeUsage, "needs NAME@VERSION", []string{"key", "recover", "--mount", m, "@1"}},
		{nil, control.CodeUsage, "takes no --force", []string{"key", "purge", "--mount", m, "--force", "k@1"}},
		{nil, control.CodeUsage, "needs --rotate-every", []string{"key", "policy", "--mount", m, "k"}},
		{nil, control.CodeUsage, "below the minimum", []string{"key", "policy", "--mount", m, "--rotate-every", "1m", "k"}},
		// not found
		{nil, control.CodeNotFound, `key "nokey" does not exist`, []string{"key", "describe", "--mount", m, "nokey"}},
		{nil, control.CodeNotFound, `key "nokey" does not exist`, []string{"key", "roll", "--mount", m, "nokey"}},
		{nil, control.CodeNotFound, `key "nokey" does not exist`, []string{"zone", "create", plain, "--key", "nokey"}},
		{nil, control.CodeNotFound, `main key "nomain" does not exist`, []string{"key", "create", "--mount", m, "--main-key", "nomain", "k2"}},
		{nil, control.CodeNotFound, `main key "nomain" does not exist`, []string{"kms", "show", "--mount", m, "nomain"}},
		{nil, control.CodeNotFound, `key "nokey" does not exist`, []string{"key", "disable", "--mount", m, "nokey"}},
		{nil, control.CodeNotFound, `key "nokey" does not exist`, []string{"key", "enable", "--mount", m, "nokey"}},
		{nil, control.CodeNotFound, `key "nokey" does not exist`, []string{"key", "delete", "--mount", m, "nokey"}},
		{nil, control.CodeNotFound, `key "nokey" does not exist`, []string{"key", "recover", "--mount", m, "nokey"}},
		{nil, control.CodeNotFound, `key "nokey" does not exist`, []string{"key", "purge", "--mount", m, "nokey"}},
		{nil, control.CodeNotFound, `key "nokey" does not exist`, []string{"key", "retire", "--mount", m, "nokey@1"}},
		{nil, control.CodeNotFound, "key k@9 does not exist", []string{"key", "retire", "--mount", m, "k@9"}},
		{nil, control.CodeNotFound, "key k@9 does not exist", []string{"key", "purge", "--mount", m, "k@9"}},
		{nil, control.CodeNotFound, `key "nokey" does not exist`, []string{"key", "policy", "--mount", m, "--rotate-every", "720h", "nokey"}},
		{nil, control.CodeNotFound, "is not an encryption zone root", []string{"reencrypt", "start", plain}},
		{nil, control.CodeNotFound, "has never been re-encrypted", []string{"reencrypt", "status", filepath.Join(above, "inner")}},
		{nil, control.CodeNotFound, "has no running reencryption job", []string{"reencrypt", "cancel", filepath.Join(above, "inner")}},
		{nil, control.CodeNotFound, "is not inside an ezfs mount", []string{"file", "info", d}},
		{nil, control.CodeNotFound, "is not inside an ezfs mount", []string{"key", "list", "--mount", d}},
		{nil, control.CodeNotFound, "no such file", []string{"file", "info", filepath.Join(zone, "missing")}},
		{nil, control.CodeNotFound, "run 'ezfs init' first", []string{"mount", d, m2}},
		{nil, control.CodeNotFound, "not an ezfs mount", []string{"umount", d}},
		{nil, control.CodeNotFound, "is not a directory", []string{"mount", b2, filepath.Join(m2, "nonexistent")}},
		{nil, control.CodeNotFound, "passphrase file", []string{"mount", "--passphrase-file", filepath.Join(d, "none"), b2, m2}},
		// permission, credential refused
		{wrongEnv, control.CodePermission, "wrong passphrase", []string{"mount", b2, m2}},
		{nil, control.CodePermission, "wrong passphrase", []string{"mount", "--passphrase-file", wrong, b2, m2}},
		{nil, control.CodePermission, "is empty", []string{"mount", "--passphrase-file", empty, b2, m2}},
		// provider unavailable
		{vault, control.CodeUnavailable, "key provider unavailable", []string{"init", "--provider", "vault", "--vault-key", "k", "--vault-addr", "http://127.0.0.1:1", d}},
		{vault, control.CodeUnavailable, "key provider unavailable", []string{"kms", "create", "--mount", m, "--provider", "vault", "--vault-key", "k", "--vault-addr", "http://127.0.0.1:1", "tenant"}},
		// busy, conflict
		{nil, control.CodeBusy, "already has a keystore", []string{"init", e.backing}},
		{nil, control.CodeBusy, "is in use", []string{"mount", e.backing, m2}},
		{nil, control.CodeBusy, `key "k" already exists`, []string{"key", "create", "--mount", m, "k"}},
		{nil, control.CodeBusy, "is already an encryption zone", []string{"zone", "create", zone, "--key", "k"}},
		{nil, control.CodeBusy, "is inside an encryption zone", []string{"zone", "create", filepath.Join(zone, "sub"), "--key", "k"}},
		{nil, control.CodeBusy, "contains an encryption zone", []string{"zone", "create", above, "--key", "k"}},
		{nil, control.CodeBusy, "is not empty", []string{"zone", "create", full, "--key", "k"}},
		{nil, control.CodeBusy, "already running", []string{"reencrypt", "start", zone}},
		{nil, control.CodeBusy, "cannot disable a key that is disabled", []string{"key", "disable", "--mount", m, "kx"}},
		{nil, control.CodeBusy, "cannot enable a key that is active", []string{"key", "enable", "--mount", m, "k"}},
		{nil, control.CodeBusy, "used by zone /above/inner, /z", []string{"key", "delete", "--mount", m, "k"}},
		{nil, control.CodeBusy, "cannot recover a key that is active", []string{"key", "recover", "--mount", m, "k"}},
		{nil, control.CodeBusy, "cannot purge a key that is active", []string{"key", "purge", "--mount", m, "--force", "k"}},
		{nil, control.CodeBusy, "latest version", []string{"key", "retire", "--mount", m, "k@2"}},
		{nil, control.CodeBusy, "a reencryption job is running on zone /z", []string{"key", "retire", "--mount", m, "k@1"}},
		{nil, control.CodeBusy, "it is active", []string{"key", "purge", "--mount", m, "k@1"}},
		{nil, control.CodeBusy, "it is active", []string{"key", "recover", "--mount", m, "k@1"}},
		// corrupt data
		{nil, control.CodeCorrupt, "EDEK record", []string{"file", "info", bad}},
		{nil, control.CodeCorrupt, "invalid database", []string{"mount", corruptB, corruptM}},
		{nil, control.CodeCorrupt, "1 files have an EDEK this ezfs cannot read", []string{"key", "retire", "--mount", m, "k2@1"}},
		// internal: what has no class (the keystore folder cannot be made under a file)
		{nil, control.CodeInternal, "not a directory", []string{"init", "--keystore", "/proc/version/ks", d}},
	}
	seen := map[control.Code]bool{}
	for _, c := range cases {
		failsCode(t, c.env, c.code, c.want, c.args...)
		seen[c.code] = true
	}
	// --json output of a failed command carries the code.
	out := failsCode(t, nil, control.CodeNotFound, "does not exist", "key", "describe", "--json", "--mount", m, "nokey")
	var f struct {
		Error struct {
			Code     control.Code `json:"code"`
			ExitCode int          `json:"exit_code"`
			Message  string       `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(out), &f); err != nil || f.Error.Code != control.CodeNotFound || f.Error.ExitCode != 3 ||
		!strings.Contains(f.Error.Message, `key "nokey" does not exist`) {
		t.Errorf("--json failure: %q (%v)", out, err)
	}
	// Busy: a file held open keeps the mount, and umount says so.
	fh, err := os.Open(filepath.Join(zone, "f1"))
	if err != nil {
		t.Fatal(err)
	}
	failsCode(t, nil, control.CodeBusy, "is busy", "umount", m)
	fh.Close()
	for _, c := range control.Codes() {
		if c != control.CodeOK && !seen[c] {
			t.Errorf("no bad invocation exits with %s (%d)", c, c.ExitCode())
		}
	}
	if n := len(cases); n < 30 {
		t.Errorf("only %d cases", n)
	}
	if e.mounted() && !strings.Contains(e.run("status", "--mount", m), m) {
		t.Error("status after the bad invocations")
	}
}
