package integration

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSystemdUnit (issue 16, criterion 3): the installed ezfs@.service passes
// systemd-analyze verify without a warning (its ExecStart binary and its man page
// installed under a temporary PREFIX, so verify finds both).
func TestSystemdUnit(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("systemd-analyze is missing (scripts/deps.sh installs Debian's systemd)")
	}
	prefix := t.TempDir()
	cmd := exec.Command("make", "-s", "-C", "..", "install", "PREFIX="+prefix, "SBINDIR="+filepath.Join(prefix, "sbin"),
		"BIN="+filepath.Join(t.TempDir(), "ezfs"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	unit := filepath.Join(prefix, "lib/systemd/system/ezfs@.service")
	verify := exec.Command("systemd-analyze", "verify", unit)
	verify.Env = append(os.Environ(), "MANPATH="+filepath.Join(prefix, "share/man"))
	out, err := verify.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(unit)
	for _, w := range []string{"Type=notify", "ExecStart=" + prefix + "/bin/ezfs mount --foreground", "LoadCredential=passphrase:", "Restart=on-failure"} {
		if !strings.Contains(string(b), w) {
			t.Errorf("unit lacks %q", w)
		}
	}
}

// notice is one sd_notify datagram, with the sender's PID and whether the mount
// served when it arrived.
type notice struct {
	state  string
	pid    int32
	served bool
}

// notifySocket listens where NOTIFY_SOCKET will point, as systemd does (SO_PASSCRED for
// the sender's PID); each datagram is checked against served the moment it arrives.
func notifySocket(t *testing.T, served func() bool) (string, <-chan notice) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	raw, _ := conn.SyscallConn()
	_ = raw.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1) })
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan notice, 16)
	go func() {
		buf, oob := make([]byte, 4096), make([]byte, 1024)
		for {
			n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
			if err != nil {
				close(ch)
				return
			}
			nt := notice{state: string(buf[:n]), served: served()}
			if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for _, m := range msgs {
					if cred, err := unix.ParseUnixCredentials(&m); err == nil {
						nt.pid = cred.Pid
					}
				}
			}
			ch <- nt
		}
	}()
	return path, ch
}

// foreground starts `ezfs mount --foreground` of e as systemd would, without the
// secrets of the test's environment, with extra variables.
func foreground(t *testing.T, e *env, extra ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(ezfsBin, "mount", "--foreground", e.backing, e.mnt)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "EZFS_PASSPHRASE=") && !strings.HasPrefix(kv, "EZFS_EXTERNAL_KEY_PIN=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, extra...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			_ = unix.Unmount(e.mnt, unix.MNT_DETACH)
		}
	})
	return cmd, &stderr
}

func waitNotice(t *testing.T, ch <-chan notice, want string) notice {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case nt, ok := <-ch:
			if !ok {
				t.Fatalf("notify socket closed before %s", want)
			}
			for _, l := range strings.Split(nt.state, "\n") {
				if l == want {
					return nt
				}
			}
			if strings.Contains(nt.state, "READY=1") || strings.Contains(nt.state, "STOPPING=1") {
				t.Fatalf("got %q while waiting for %s", nt.state, want)
			}
		case <-timeout:
			t.Fatalf("no %s within 60s", want)
		}
	}
}

// servesFile is the check a notice makes: the mount is there and reads through.
func servesFile(e *env, f, want string) func() bool {
	return func() bool {
		if !e.mounted() {
			return false
		}
		b, err := os.ReadFile(f)
		return err == nil && string(b) == want
	}
}

// runUnderSystemd runs the foreground daemon with NOTIFY_SOCKET: READY=1 from its PID
// only once the mount serves, STOPPING=1 on SIGTERM, then a clean exit and no mount.
func runUnderSystemd(t *testing.T, e *env, f, data string, extra ...string) {
	t.Helper()
	sock, ch := notifySocket(t, servesFile(e, f, data))
	cmd, stderr := foreground(t, e, append(extra, "NOTIFY_SOCKET="+sock)...)
	ready := waitNotice(t, ch, "READY=1")
	if !ready.served {
		t.Errorf("READY=1 before the mount served (%q)", ready.state)
	}
	if int(ready.pid) != cmd.Process.Pid {
		t.Errorf("READY=1 from PID %d, want the main PID %d", ready.pid, cmd.Process.Pid)
	}
	if !strings.Contains(ready.state, "MAINPID=") {
		t.Errorf("READY without MAINPID: %q", ready.state)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	stop := waitNotice(t, ch, "STOPPING=1")
	if int(stop.pid) != cmd.Process.Pid {
		t.Errorf("STOPPING=1 from PID %d", stop.pid)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("daemon exit after SIGTERM: %v\n%s", err, stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("daemon still runs 30s after SIGTERM")
	}
	if e.mounted() {
		t.Error("still mounted after SIGTERM")
	}
	if !strings.Contains(stderr.String(), "unmounted "+e.mnt) {
		t.Errorf("no clean unmount in the log:\n%s", stderr)
	}
}

// TestSystemdNotify (issue 16, criterion 3): the sd_notify protocol for real, the
// passphrase in the environment as a unit's Environment= would give it (the daemon
// executes itself again without it and keeps its PID).
func TestSystemdNotify(t *testing.T) {
	e := newEnv(t)
	zone := e.zone("z", "k")
	f := filepath.Join(zone, "f")
	if err := os.WriteFile(f, []byte("served"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.umount()
	runUnderSystemd(t, e, f, "served", "EZFS_PASSPHRASE="+passphrase)
}

// TestSystemdCredentials (issue 16, criterion 3): the passphrase of a system main key
// and the PIN of a pkcs11 one come from $CREDENTIALS_DIRECTORY (LoadCredential=); a
// wrong one fails with exit code 4 and no READY=1.
func TestSystemdCredentials(t *testing.T) {
	creds := func(name, secret string) string {
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, name), []byte(secret+"\n"), 0o400); err != nil {
			t.Fatal(err)
		}
		return "CREDENTIALS_DIRECTORY=" + d
	}
	e := newEnv(t)
	zone := e.zone("z", "k")
	f := filepath.Join(zone, "f")
	if err := os.WriteFile(f, []byte("system"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.umount()
	e.sub("system", func(t *testing.T) { runUnderSystemd(t, e, f, "system", creds("passphrase", passphrase)) })
	e.sub("wrong", func(t *testing.T) {
		sock, ch := notifySocket(t, func() bool { return false })
		cmd, stderr := foreground(t, e, creds("passphrase", "not it"), "NOTIFY_SOCKET="+sock)
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 4 || !strings.Contains(stderr.String(), "wrong passphrase") {
			t.Errorf("wrong credential: %v, want exit 4\n%s", err, stderr)
		}
		select {
		case nt := <-ch:
			t.Errorf("notice from a failed mount: %q", nt.state)
		default:
		}
	})

	e.sub("pkcs11", func(t *testing.T) {
		softHSM(t)
		p := newEnvInit(t, []string{"--provider", "pkcs11", "--pkcs11-module", softhsmModule,
			"--pkcs11-token", tokenLabel, "--pkcs11-key", "ezfs-main"})
		pz := p.zone("z", "k")
		pf := filepath.Join(pz, "f")
		if err := os.WriteFile(pf, []byte("token"), 0o644); err != nil {
			t.Fatal(err)
		}
		p.umount()
		runUnderSystemd(t, p, pf, "token", creds("pin", tokenPIN))
	})
}
