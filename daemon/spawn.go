package daemon

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/ezfs/ezfs/control"
)

// The background daemon is the same binary started again with --foreground. The
// passphrase reaches it on a pipe (fd 3), never on its command line or in its
// environment; it reports readiness or the reason it failed on another pipe (fd 4).
const (
	childEnv    = "EZFS_DAEMON_CHILD"
	secretFd    = 3
	readyFd     = 4
	readyOK     = "ready"
	startupWait = 2 * time.Minute
)

// Start runs `ezfs <args>` in the background with its output appended to logPath, hands
// it secret on a pipe, and returns once the mount is ready, or with the daemon's own
// error message.
func Start(args []string, secret []byte, logPath string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("daemon log: %w", err)
	}
	defer logf.Close()
	secretR, secretW, err := os.Pipe()
	if err != nil {
		return err
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer readyR.Close()
	cmd := exec.Command(exe, args...)
	cmd.Env = append(cleanEnv(), childEnv+"=1")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{secretR, readyW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	err = cmd.Start()
	secretR.Close()
	readyW.Close()
	if err != nil {
		secretW.Close()
		return fmt.Errorf("start daemon: %w", err)
	}
	_, _ = secretW.Write(secret)
	secretW.Close()

	done := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(readyR).ReadString('\n')
		done <- strings.TrimSpace(line)
	}()
	select {
	case msg := <-done:
		if msg == readyOK {
			return cmd.Process.Release()
		}
		_ = cmd.Wait()
		if msg == "" {
			return fmt.Errorf("the daemon exited before the mount was ready; see %s", logPath)
		}
		return errors.New(msg)
	case <-time.After(startupWait):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return fmt.Errorf("the daemon did not get ready within %v; see %s", startupWait, logPath)
	}
}

// cleanEnv drops the passphrase and PIN from the daemon's environment: it has them on a
// pipe. VAULT_* stay: the Vault client reads them.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "EZFS_PASSPHRASE=") && !strings.HasPrefix(kv, "EZFS_EXTERNAL_KEY_PIN=") &&
			!strings.HasPrefix(kv, childEnv+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// Child reports whether this process is a daemon started by Start. If so it returns
// the secret and a function that reports readiness (nil) or failure to the parent.
func Child() (secret []byte, report func(error), ok bool) {
	if os.Getenv(childEnv) != "1" {
		return nil, nil, false
	}
	os.Unsetenv(childEnv)
	sf := os.NewFile(secretFd, "secret")
	secret, _ = io.ReadAll(sf)
	sf.Close()
	rf := os.NewFile(readyFd, "ready")
	reported := false
	report = func(err error) {
		if reported {
			return
		}
		reported = true
		msg := readyOK
		if err != nil {
			msg = strings.ReplaceAll(err.Error(), "\n", " ")
		}
		fmt.Fprintln(rf, msg)
		rf.Close()
	}
	return secret, report, true
}

// ClearStale detaches mnt if it is an ezfs mount whose daemon is gone (the kernel
// answers ENOTCONN), so that a new `ezfs mount` after a crash needs no manual umount.
func ClearStale(mnt string) error {
	var st syscall.Stat_t
	err := syscall.Stat(mnt, &st)
	if !errors.Is(err, syscall.ENOTCONN) {
		return nil
	}
	ms, err := control.Mounts()
	if err != nil {
		return err
	}
	for _, m := range ms {
		if m.Mountpoint == mnt {
			if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
				return fmt.Errorf("detach the dead mount at %s: %w", mnt, err)
			}
			return nil
		}
	}
	return nil
}
