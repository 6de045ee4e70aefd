// Package integration runs ezfs end to end: the real binary, real FUSE mounts, as root.
package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ezfs/ezfs/control"
	"github.com/ezfs/ezfs/keystore"
	"golang.org/x/sys/unix"
)

const passphrase = "integration test passphrase"

var ezfsBin string

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperMain())
	}
	if os.Getenv(appendEnv) != "" {
		os.Exit(m.Run()) // the writer process of TestKillDuringAppend: no build
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "integration tests need root (FUSE mounts, chown, other users)")
		os.Exit(1)
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		fmt.Fprintln(os.Stderr, "integration tests need /dev/fuse:", err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "ezfs-bin-")
	if err != nil {
		panic(err)
	}
	ezfsBin = filepath.Join(dir, "ezfs")
	build := exec.Command("go", "build", "-o", ezfsBin, "../cmd/ezfs")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build ezfs:", err)
		os.Exit(1)
	}
	os.Setenv("EZFS_PASSPHRASE", passphrase)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is one initialised backing dir, mounted at mnt while the test runs.
type env struct {
	t       *testing.T
	backing string
	mnt     string
	opts    []string
	// keystore is the --keystore folder given to init and mount; "" is the default,
	// BACKING/.ezfs.
	keystore string
}

// tempDir is a t.TempDir that other users can traverse (for shared-mount tests).
func tempDir(t *testing.T) string {
	d := t.TempDir()
	for p := d; p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
		_ = os.Chmod(p, 0o755)
	}
	return d
}

// newEnv initialises a backing dir and mounts it with mount options opts.
func newEnv(t *testing.T, opts ...string) *env {
	t.Helper()
	return newEnvIn(t, tempDir(t), opts...)
}

// newEnvIn is newEnv with backing and mount point in d, where the backing folder may
// exist already (another file system mounted there).
func newEnvIn(t *testing.T, d string, opts ...string) *env {
	t.Helper()
	e := &env{t: t, backing: filepath.Join(d, "backing"), mnt: filepath.Join(d, "mnt"), opts: opts}
	e.start()
	return e
}

// newEnvKeystore is newEnv with the keystore at ks, a path relative to the backing
// dir, given to init and mount as --keystore.
func newEnvKeystore(t *testing.T, ks string, opts ...string) *env {
	t.Helper()
	d := tempDir(t)
	e := &env{t: t, backing: filepath.Join(d, "backing"), mnt: filepath.Join(d, "mnt"), opts: opts}
	e.keystore = filepath.Join(e.backing, ks)
	e.start()
	return e
}

// start makes the backing dir and the mount point, initialises and mounts.
func (e *env) start() {
	e.t.Helper()
	for _, p := range []string{e.backing, e.mnt} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			e.t.Fatal(err)
		}
	}
	args := []string{"init", e.backing}
	if e.keystore != "" {
		// init makes the keystore folder, not its parent (an etcd keystore has none).
		if !keystore.IsEtcd(e.keystore) {
			if err := os.MkdirAll(filepath.Dir(e.keystore), 0o755); err != nil {
				e.t.Fatal(err)
			}
		}
		args = append(args, "--keystore", e.keystore)
	}
	e.run(args...)
	e.mount()
	e.t.Cleanup(e.cleanup)
}

// sub runs f as subtest name of e's test; e's own checks (run, fails, ...) fail the
// subtest meanwhile.
func (e *env) sub(name string, f func(t *testing.T)) bool {
	parent := e.t
	defer func() { e.t = parent }()
	return parent.Run(name, func(t *testing.T) {
		e.t = t
		f(t)
	})
}

// ksDir is the keystore folder.
func (e *env) ksDir() string {
	if e.keystore != "" {
		return e.keystore
	}
	return filepath.Join(e.backing, ".ezfs")
}

// daemonLog is the daemon's log, kept in the keystore folder (an etcd keystore's:
// in $EZFS_LOG_DIR, keystore.LogDir).
func (e *env) daemonLog() string {
	b, _ := os.ReadFile(filepath.Join(keystore.LogDir(e.ksDir()), "ezfs.log"))
	return string(b)
}

// status is `ezfs status --json` of this mount.
func (e *env) status() control.Status {
	e.t.Helper()
	var st []control.Status
	decodeJSON(e.t, e.run("status", "--json", "--mount", e.mnt), &st)
	if len(st) != 1 {
		e.t.Fatalf("status of %s: %+v", e.mnt, st)
	}
	return st[0]
}

// zoneList is `ezfs zone list --json` of this mount.
func (e *env) zoneList() []control.ZoneInfo {
	e.t.Helper()
	var zs []control.ZoneInfo
	decodeJSON(e.t, e.run("zone", "list", "--mount", e.mnt, "--json"), &zs)
	return zs
}

func (e *env) mount() {
	e.t.Helper()
	args := []string{"mount", e.backing, e.mnt}
	if e.keystore != "" {
		args = append(args, "--keystore", e.keystore)
	}
	if len(e.opts) > 0 {
		args = append(args, "-o", strings.Join(e.opts, ","))
	}
	e.run(args...)
}

func (e *env) umount() {
	e.t.Helper()
	e.run("umount", e.mnt)
}

func (e *env) remount() {
	e.t.Helper()
	e.umount()
	e.mount()
}

func (e *env) mounted() bool {
	ms, _ := control.Mounts()
	for _, m := range ms {
		if m.Mountpoint == e.mnt {
			return true
		}
	}
	return false
}

func (e *env) cleanup() {
	if !e.mounted() {
		return
	}
	if _, _, err := ezfs("umount", e.mnt); err != nil {
		e.t.Logf("umount: %v; detaching", err)
		_ = unix.Unmount(e.mnt, unix.MNT_DETACH)
	}
	if e.t.Failed() {
		if log := e.daemonLog(); log != "" {
			e.t.Logf("daemon log:\n%s", log)
		}
	}
}

// ezfs runs the binary and returns its stdout and stderr.
func ezfs(args ...string) (string, string, error) {
	return ezfsEnv(nil, args...)
}

// ezfsEnv runs the binary with extra environment variables.
func ezfsEnv(extra []string, args ...string) (string, string, error) {
	cmd := exec.Command(ezfsBin, args...)
	cmd.Env = append(os.Environ(), extra...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		return "", "", err
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), errb.String(), err
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		return out.String(), errb.String(), errors.New("ezfs timed out: " + strings.Join(args, " "))
	}
}

// run runs ezfs and fails the test on error.
func (e *env) run(args ...string) string {
	e.t.Helper()
	out, errOut, err := ezfs(args...)
	if err != nil {
		e.t.Fatalf("ezfs %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// fails runs ezfs, expects a non-zero exit and a one-line error containing want.
func (e *env) fails(want string, args ...string) {
	e.t.Helper()
	e.failsEnv(nil, want, args...)
}

func (e *env) failsEnv(extra []string, want string, args ...string) {
	e.t.Helper()
	out, errOut, err := ezfsEnv(extra, args...)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		e.t.Fatalf("ezfs %s: want a failure, got %v\nstdout: %s", strings.Join(args, " "), err, out)
	}
	msg := strings.TrimSpace(errOut)
	if strings.Count(msg, "\n") != 0 || !strings.HasPrefix(msg, "ezfs: ") {
		e.t.Errorf("ezfs %s: error is not one line: %q", strings.Join(args, " "), errOut)
	}
	if !strings.Contains(msg, want) {
		e.t.Errorf("ezfs %s: error %q does not say %q", strings.Join(args, " "), msg, want)
	}
}

// zone makes directory name in the mount a zone under key (created if needed) and
// returns its path in the mount.
func (e *env) zone(name, key string) string {
	e.t.Helper()
	if _, _, err := ezfs("key", "describe", "--mount", e.mnt, key); err != nil {
		e.run("key", "create", "--mount", e.mnt, key)
	}
	p := filepath.Join(e.mnt, name)
	if err := os.MkdirAll(p, 0o755); err != nil {
		e.t.Fatal(err)
	}
	e.run("zone", "create", p, "--key", key)
	return p
}

// backingOf is the backing path of a path in the mount.
func (e *env) backingOf(p string) string {
	rel, err := filepath.Rel(e.mnt, p)
	if err != nil {
		e.t.Fatal(err)
	}
	return filepath.Join(e.backing, rel)
}

// fileInfo returns `ezfs file info --json` of p.
func (e *env) fileInfo(p string) control.FileInfo {
	e.t.Helper()
	var fi control.FileInfo
	decodeJSON(e.t, e.run("file", "info", "--json", p), &fi)
	return fi
}

func errnoOf(err error) syscall.Errno {
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	return 0
}

func decodeJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("decode %q: %v", s, err)
	}
}
