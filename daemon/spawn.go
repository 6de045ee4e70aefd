package daemon

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ezfs/ezfs/control"
	"github.com/ezfs/ezfs/keystore"
	"golang.org/x/sys/unix"
)

// The background daemon is the same binary started again with --foreground. The
// passphrase reaches it on a pipe (fd 3), never on its command line or in its
// environment; it reports readiness or the reason it failed on another pipe (fd 4).
// A foreground daemon whose environment held a secret executes itself again (Reexec)
// with the secret on a pipe whose fd number follows reexecMode in childEnv.
const (
	childEnv    = "EZFS_DAEMON_CHILD"
	spawnMode   = "1"
	reexecMode  = "fd="
	secretFd    = 3
	readyFd     = 4
	readyOK     = "ready"
	startupWait = 2 * time.Minute
)

// secretVars are the environment variables secrets may come in. The daemon gets their
// values on its secrets pipe, never in its environment.
var secretVars = []string{"EZFS_PASSPHRASE", "EZFS_EXTERNAL_KEY_PIN", "VAULT_TOKEN"}

// AddSecretVars names more environment variables that hold secrets (the credentials
// of main keys whose source is an environment variable): they are kept out of the
// daemon's environment like the others. Call it before Start or Reexec.
func AddSecretVars(names ...string) {
	for _, n := range names {
		if !slices.Contains(secretVars, n) {
			secretVars = append(secretVars, n)
		}
	}
}

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
	cmd.Env = append(cleanEnv(), childEnv+"="+spawnMode)
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
		// "CODE<tab>message" (reporter); a bare message from an older binary.
		if code, text, ok := strings.Cut(msg, "\t"); ok {
			return &control.Error{Code: control.Code(code), Msg: text}
		}
		return errors.New(msg)
	case <-time.After(startupWait):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return fmt.Errorf("the daemon did not get ready within %v; see %s", startupWait, logPath)
	}
}

// EnvHoldsSecret reports whether this process was started with a secret in its
// environment. The kernel shows that initial environment in /proc/PID/environ for as
// long as the process runs; os.Unsetenv does not change it.
func EnvHoldsSecret() bool {
	for _, v := range secretVars {
		if os.Getenv(v) != "" {
			return true
		}
	}
	return false
}

// Reexec executes this program again in place, with the same arguments, an environment
// without secrets, and secret on a pipe that Child reads. The PID stays, so whoever
// started the daemon (a supervisor, a shell's job control) keeps tracking it. It
// returns only on failure.
func Reexec(secret []byte) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	err = fill(w, secret)
	w.Close()
	if err != nil {
		return fmt.Errorf("secret handover: %w", err)
	}
	// Only the read end crosses exec; the write end is closed so the reader sees EOF.
	fd := r.Fd()
	if _, err := unix.FcntlInt(fd, unix.F_SETFD, 0); err != nil {
		return fmt.Errorf("secret handover: %w", err)
	}
	env := append(cleanEnv(), fmt.Sprintf("%s=%s%d", childEnv, reexecMode, fd))
	// /proc/self/exe still names this program if its file was replaced since.
	return fmt.Errorf("re-execute without secrets: %w", syscall.Exec("/proc/self/exe", os.Args, env))
}

// fill writes secret into a pipe nobody reads yet, so the pipe must hold all of it.
func fill(w *os.File, secret []byte) error {
	size, err := unix.FcntlInt(w.Fd(), unix.F_GETPIPE_SZ, 0)
	if err == nil && size < len(secret) {
		_, err = unix.FcntlInt(w.Fd(), unix.F_SETPIPE_SZ, len(secret))
	}
	if err != nil {
		return err
	}
	_, err = w.Write(secret)
	return err
}

// cleanEnv drops the secrets from the daemon's environment: it has them on a pipe.
// The other VAULT_* variables stay; the daemon does not read them (each main key
// version records its server). The variables that name files (an etcd keystore's
// credential files, the log folder: keystore.PathVars) stay, made absolute: they are
// paths, not secrets, and the background daemon runs in "/".
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		name, val, _ := strings.Cut(kv, "=")
		switch {
		case name == childEnv || slices.Contains(secretVars, name):
		case slices.Contains(keystore.PathVars, name) && val != "" && !filepath.IsAbs(val):
			if abs, err := filepath.Abs(val); err == nil {
				kv = name + "=" + abs
			}
			out = append(out, kv)
		default:
			out = append(out, kv)
		}
	}
	return out
}

// Child reports whether this process is a daemon started by Start or Reexec. If so it
// returns the secret, and for Start a function that reports readiness (nil) or failure
// to the parent; report is nil after Reexec, where nobody waits.
func Child() (secret []byte, report func(error), ok bool) {
	mode := os.Getenv(childEnv)
	os.Unsetenv(childEnv)
	switch {
	case mode == spawnMode:
		return readSecret(secretFd), reporter(os.NewFile(readyFd, "ready")), true
	case strings.HasPrefix(mode, reexecMode):
		fd, err := strconv.Atoi(strings.TrimPrefix(mode, reexecMode))
		if err != nil {
			return nil, nil, true // no secret: unmarshalling it fails with a message
		}
		return readSecret(uintptr(fd)), nil, true
	}
	return nil, nil, false
}

func readSecret(fd uintptr) []byte {
	f := os.NewFile(fd, "secret")
	secret, _ := io.ReadAll(f)
	f.Close()
	return secret
}

// reporter returns the function that tells the parent on rf whether the mount is ready.
func reporter(rf *os.File) func(error) {
	reported := false
	return func(err error) {
		if reported {
			return
		}
		reported = true
		msg := readyOK
		if err != nil {
			msg = string(Classify(err)) + "\t" + strings.ReplaceAll(err.Error(), "\n", " ")
		}
		fmt.Fprintln(rf, msg)
		rf.Close()
	}
}

// ClearStale detaches mnt if it is an ezfs mount whose daemon is gone (the kernel
// answers ENOTCONN), so that a new `ezfs mount` after a crash needs no manual umount.
func ClearStale(mnt string) error {
	// Mounts of daemons killed one after the other may be stacked at mnt: each is
	// detached in turn.
	for i := 0; i < maxStale; i++ {
		// statfs, not stat: the kernel answers a stat of a dead FUSE mount's root from
		// its attribute cache for a while, so a new mount went on top of the dead one;
		// statfs always asks the daemon.
		var st syscall.Statfs_t
		if err := syscall.Statfs(mnt, &st); !errors.Is(err, syscall.ENOTCONN) {
			return nil
		}
		if ours, err := isMount(mnt); err != nil || !ours {
			return err
		}
		if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
			return fmt.Errorf("detach the dead mount at %s: %w", mnt, err)
		}
	}
	return nil
}

// maxStale bounds the dead mounts ClearStale detaches at one mountpoint.
const maxStale = 100

// isMount reports whether mnt is an ezfs mount point.
func isMount(mnt string) (bool, error) {
	ms, err := control.Mounts()
	if err != nil {
		return false, err
	}
	for _, m := range ms {
		if m.Mountpoint == mnt {
			return true, nil
		}
	}
	return false, nil
}
