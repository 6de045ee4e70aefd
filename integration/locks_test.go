package integration

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// lockKinds take and try an exclusive lock on a whole file, the two ways a program
// can: flock(2), and open file description fcntl locks (the test is one process, so
// classic POSIX locks would all be its own).
var lockKinds = []struct {
	name string
	lock func(f *os.File, wait bool) error
}{
	{"flock", func(f *os.File, wait bool) error {
		op := unix.LOCK_EX
		if !wait {
			op |= unix.LOCK_NB
		}
		return unix.Flock(int(f.Fd()), op)
	}},
	{"ofd", func(f *os.File, wait bool) error {
		cmd := unix.F_OFD_SETLKW
		if !wait {
			cmd = unix.F_OFD_SETLK
		}
		return unix.FcntlFlock(f.Fd(), cmd, &unix.Flock_t{Type: unix.F_WRLCK})
	}},
}

// TestLocks: a lock goes with the open file that took it, also while other opens of
// the file remain (the first open's descriptor is the kernel's passthrough backing
// file); a waiter gets the lock once its holder closes; and a wait ends when the
// waiter's signal handler asks it to (`flock -w`).
func TestLocks(t *testing.T) {
	e := newEnv(t)
	daemon := newEnv(t, "nopassthrough")
	plain := filepath.Join(e.mnt, "plain")
	if err := os.Mkdir(plain, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, where := range []struct{ name, dir string }{
		{"plain", plain}, {"zone", e.zone("zone", "k")}, {"nopassthrough", daemon.mnt},
	} {
		for _, k := range lockKinds {
			t.Run(where.name+"/"+k.name, func(t *testing.T) {
				p := filepath.Join(where.dir, "lock-"+k.name)
				if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
					t.Fatal(err)
				}
				open := func() *os.File {
					f, err := os.OpenFile(p, os.O_RDWR, 0)
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { f.Close() })
					return f
				}

				// Released at close, while another open of the file stays.
				holder, other := open(), open()
				if err := k.lock(holder, false); err != nil {
					t.Fatal(err)
				}
				if err := k.lock(other, false); !errors.Is(err, unix.EAGAIN) {
					t.Fatalf("second lock while held: %v, want EAGAIN", err)
				}
				holder.Close()
				if err := eventually(func() error { return k.lock(other, false) }); err != nil {
					t.Fatalf("lock after the holder closed: %v", err)
				}
				other.Close()

				// A waiter gets the lock when its holder closes.
				holder, waiter := open(), open()
				if err := k.lock(holder, false); err != nil {
					t.Fatal(err)
				}
				got := make(chan error, 1)
				go func() { got <- k.lock(waiter, true) }()
				time.Sleep(50 * time.Millisecond)
				holder.Close()
				select {
				case err := <-got:
					if err != nil {
						t.Fatalf("waiting lock: %v", err)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("waiting lock still waits after its holder closed")
				}
				waiter.Close()
			})
		}
		t.Run(where.name+"/flock-timeout", func(t *testing.T) {
			p := filepath.Join(where.dir, "lock-timeout")
			holder, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			defer holder.Close()
			if err := unix.Flock(int(holder.Fd()), unix.LOCK_EX); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, "flock", "--wait", "0.2", "--conflict-exit-code", "7", p, "true").CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 7 {
				t.Fatalf("flock --wait 0.2 on a held lock: %v (%s), want exit code 7 when the wait runs out", err, out)
			}
		})
	}
}

// eventually retries fn for a few seconds, for what the kernel finishes after close(2)
// returns (it sends RELEASE in the background).
func eventually(fn func() error) error {
	var err error
	for i := 0; i < 100; i++ {
		if err = fn(); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return err
}
