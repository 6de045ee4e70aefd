package fs

import (
	"context"
	"errors"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

const nobody = 65534

func callerCtx(uid, gid uint32) context.Context {
	return &fuse.Context{Caller: fuse.Caller{Owner: fuse.Owner{Uid: uid, Gid: gid}}}
}

func effective(t *testing.T, c int) bool {
	t.Helper()
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var d [2]unix.CapUserData
	if err := unix.Capget(&hdr, &d[0]); err != nil {
		t.Fatal(err)
	}
	return d[c/32].Effective&(1<<(c%32)) != 0
}

// TestAsCaller: on a shared mount fn runs as the caller: what it creates is the
// caller's, the disk refuses it what needs CAP_MKNOD, CAP_CHOWN or CAP_SYS_RESOURCE,
// drops set-group-ID outside the caller's group, and still lets it through the
// permission checks the kernel made already (CAP_DAC_OVERRIDE). Private mounts and
// root callers are served as the daemon.
func TestAsCaller(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dir := t.TempDir() // 0700, root's
	sgid := filepath.Join(dir, "sgid")
	if err := os.Mkdir(sgid, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Chmod(sgid, 0o2777); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	l := log.New(os.Stderr, "", 0)
	shared, private := &FS{shared: true, log: l}, &FS{log: l}

	f, dev := filepath.Join(dir, "f"), filepath.Join(dir, "dev")
	g := filepath.Join(sgid, "g")
	err := shared.asCaller(callerCtx(nobody, nobody), func() error {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			return err
		}
		if err := syscall.Mknod(g, syscall.S_IFREG|0o2755, 0); err != nil {
			return err
		}
		if uid, gid := currentFsuid(), currentFsgid(); uid != nobody || gid != nobody {
			t.Errorf("fsuid/fsgid in fn: %d/%d", uid, gid)
		}
		for c, want := range map[int]bool{unix.CAP_SYS_RESOURCE: false, unix.CAP_DAC_OVERRIDE: true, unix.CAP_DAC_READ_SEARCH: true, unix.CAP_FSETID: false} {
			if got := effective(t, c); got != want {
				t.Errorf("capability %d in the effective set: %v, want %v", c, got, want)
			}
		}
		if err := syscall.Mknod(dev, syscall.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); !errors.Is(err, syscall.EPERM) {
			t.Errorf("mknod of a device as the caller: %v, want EPERM", err)
		}
		if err := os.Chown(f, 0, 0); !errors.Is(err, syscall.EPERM) {
			t.Errorf("chown to root as the caller: %v, want EPERM", err)
		}
		// The kernel checked the caller's permissions; the disk must not refuse.
		if err := os.WriteFile(secret, []byte("y"), 0o600); err != nil {
			t.Errorf("write of a 0600 file of root's: %v, want it allowed (CAP_DAC_OVERRIDE)", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		p        string
		uid, gid uint32
		mode     uint32
	}{{f, nobody, nobody, 0o644}, {g, nobody, 0, 0o755}} {
		var st syscall.Stat_t
		if err := syscall.Stat(c.p, &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != c.uid || st.Gid != c.gid || st.Mode&0o7777 != c.mode {
			t.Errorf("%s: %d:%d %#o, want %d:%d %#o", c.p, st.Uid, st.Gid, st.Mode&0o7777, c.uid, c.gid, c.mode)
		}
	}

	for name, run := range map[string]func(fn func() error) error{
		"private mount": func(fn func() error) error { return private.asCaller(callerCtx(nobody, nobody), fn) },
		"root caller":   func(fn func() error) error { return shared.asCaller(callerCtx(0, nobody), fn) },
		"no caller":     func(fn func() error) error { return shared.asCaller(context.Background(), fn) },
	} {
		p := filepath.Join(dir, name)
		if err := run(func() error { return os.WriteFile(p, nil, 0o644) }); err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil || st.Uid != 0 {
			t.Errorf("%s: file owned by %d (%v), want the daemon's (0)", name, st.Uid, err)
		}
	}
}

// TestCallerThreadRestore: a thread switched to a caller and restored has the
// credentials it had; one run under asOpener switches only when asked.
func TestCallerThreadRestore(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var before, after [2]unix.CapUserData
	if err := unix.Capget(&hdr, &before[0]); err != nil {
		t.Fatal(err)
	}
	ct := &callerThread{uid: nobody, gid: nobody}
	if err := ct.become(); err != nil {
		t.Fatal(err)
	}
	if currentFsuid() != nobody || effective(t, unix.CAP_SYS_RESOURCE) {
		t.Errorf("switched: fsuid %d, CAP_SYS_RESOURCE %v", currentFsuid(), effective(t, unix.CAP_SYS_RESOURCE))
	}
	if err := ct.restore(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Capget(&hdr, &after[0]); err != nil {
		t.Fatal(err)
	}
	if after != before || currentFsuid() != 0 || currentFsgid() != 0 {
		t.Errorf("after restore: caps %+v (were %+v), fsuid %d, fsgid %d", after, before, currentFsuid(), currentFsgid())
	}

	if !passthroughAsCaller() || currentFsuid() != 0 {
		t.Errorf("passthroughAsCaller outside asOpener switched the thread (fsuid %d)", currentFsuid())
	}
	err := onCallerThread(nobody, nobody, false, log.Default(), func() error {
		if currentFsuid() != 0 {
			t.Errorf("lazy switch: fsuid %d before passthroughAsCaller", currentFsuid())
		}
		if !passthroughAsCaller() || currentFsuid() != nobody || effective(t, unix.CAP_SYS_RESOURCE) {
			t.Errorf("passthroughAsCaller: fsuid %d, CAP_SYS_RESOURCE %v", currentFsuid(), effective(t, unix.CAP_SYS_RESOURCE))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
