package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ezfs/ezfs/control"
)

// pinValue is handed to every daemon in these tests although the system provider does
// not need it: a secret the daemon never asked for must not stay visible either.
const pinValue = "integration test PIN 4711"

// TestForegroundSecrets: `ezfs mount --foreground` with the passphrase and PIN in its
// environment serves with neither in /proc/PID/environ or /proc/PID/cmdline, from the
// PID that was started (a supervisor tracks that one).
func TestForegroundSecrets(t *testing.T) {
	e := initEnv(t)
	stderr, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd := exec.Command(ezfsBin, "mount", "--foreground", e.backing, e.mnt)
	cmd.Env = append(os.Environ(), "EZFS_EXTERNAL_KEY_PIN="+pinValue)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemonProc{done: make(chan struct{})}
	go func() { d.err = cmd.Wait(); close(d.done) }()
	t.Cleanup(func() { d.stop(e) })

	pid := waitServing(t, e, d)
	if pid != cmd.Process.Pid {
		t.Fatalf("the mount is served by PID %d, not by the started PID %d", pid, cmd.Process.Pid)
	}
	checkNoSecrets(t, pid)
	e.umount()
	if <-d.done; d.err != nil {
		t.Fatalf("foreground daemon: %v", d.err)
	}
	out, _ := os.ReadFile(stderr.Name())
	if n := strings.Count(string(out), "mounted "+e.backing+" on "+e.mnt); n != 1 {
		t.Errorf("stderr says 'mounted' %d times, want once:\n%s", n, out)
	}
}

// TestBackgroundSecrets is TestForegroundSecrets for the daemon `ezfs mount` starts.
func TestBackgroundSecrets(t *testing.T) {
	e := initEnv(t)
	if out, errOut, err := ezfsEnv([]string{"EZFS_EXTERNAL_KEY_PIN=" + pinValue}, "mount", e.backing, e.mnt); err != nil {
		t.Fatalf("mount: %v\n%s%s", err, out, errOut)
	}
	checkNoSecrets(t, e.daemonPID())
}

// initEnv initialises a backing dir and leaves it unmounted.
func initEnv(t *testing.T) *env {
	t.Helper()
	d := tempDir(t)
	e := &env{t: t, backing: filepath.Join(d, "backing"), mnt: filepath.Join(d, "mnt")}
	for _, p := range []string{e.backing, e.mnt} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.run("init", e.backing)
	t.Cleanup(e.cleanup)
	return e
}

// waitServing waits until the control socket of e's mount answers and returns the PID
// it reports.
func waitServing(t *testing.T, e *env, d *daemonProc) int {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		select {
		case <-d.done:
			t.Fatalf("the foreground daemon exited before serving: %v", d.err)
		case <-time.After(50 * time.Millisecond):
		}
		out, _, err := ezfs("status", "--json", "--mount", e.mnt)
		var st []control.Status
		if err == nil && json.Unmarshal([]byte(out), &st) == nil && len(st) == 1 && st[0].PID != 0 {
			return st[0].PID
		}
	}
	t.Fatal("the foreground daemon did not serve within a minute")
	return 0
}

func checkNoSecrets(t *testing.T, pid int) {
	t.Helper()
	for _, f := range []string{"environ", "cmdline"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{passphrase, pinValue} {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("/proc/%d/%s holds the secret %q", pid, f, s)
			}
		}
	}
}

// daemonProc is a foreground daemon the test started; done closes when it has exited.
type daemonProc struct {
	done chan struct{}
	err  error
}

// stop unmounts if a failed test left the mount up, and reaps the daemon.
func (d *daemonProc) stop(e *env) {
	e.cleanup()
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		e.t.Error("the foreground daemon did not exit after unmount")
	}
}
