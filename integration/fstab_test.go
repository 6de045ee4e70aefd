package integration

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// helperPath is where mount(8) looks for the helper of type fuse.ezfs.
const helperPath = "/usr/sbin/mount.fuse.ezfs"

var helperMu sync.Mutex

// installHelper links helperPath to the binary under test for this test, and puts back
// whatever was there after it.
func installHelper(t *testing.T) {
	t.Helper()
	helperMu.Lock()
	old, oldErr := os.Readlink(helperPath)
	if oldErr != nil {
		if _, err := os.Lstat(helperPath); err == nil {
			helperMu.Unlock()
			t.Skipf("%s exists and is not a link: not touching it", helperPath)
		}
	}
	_ = os.Remove(helperPath)
	if err := os.Symlink(ezfsBin, helperPath); err != nil {
		helperMu.Unlock()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = os.Remove(helperPath)
		if oldErr == nil {
			_ = os.Symlink(old, helperPath)
		}
		helperMu.Unlock()
	})
}

// sysMount runs mount(8) or umount(8) with no secret in the environment.
func sysMount(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "EZFS_PASSPHRASE=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// daemonGone waits for process pid to end.
func daemonGone(t *testing.T, pid int) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("daemon %d still runs after umount", pid)
}

// TestMountHelper (issue 16, criterion 2): mount -t fuse.ezfs with a passphrase file,
// and an fstab entry with mount(8)'s and systemd's own options (mount -T FILE MNT),
// mount as ezfs mount does; umount MNT unmounts and the daemon exits; a secret in
// the option string is refused.
func TestMountHelper(t *testing.T) {
	installHelper(t)
	e := newEnv(t)
	zone := e.zone("z", "k")
	if err := os.WriteFile(filepath.Join(zone, "f"), []byte("secret data"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.umount()
	pass := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(pass, []byte(passphrase+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	check := func(how string) {
		t.Helper()
		if !e.mounted() {
			t.Fatalf("%s: not mounted", how)
		}
		if b, err := os.ReadFile(filepath.Join(zone, "f")); err != nil || string(b) != "secret data" {
			t.Errorf("%s: read %q %v", how, b, err)
		}
		st := e.status()
		if out, err := sysMount("umount", e.mnt); err != nil {
			t.Fatalf("%s: umount: %v\n%s", how, err, out)
		}
		if e.mounted() {
			t.Fatalf("%s: still mounted after umount", how)
		}
		daemonGone(t, st.PID)
		if !strings.Contains(e.daemonLog(), "unmounted "+e.mnt) {
			t.Errorf("%s: the daemon did not log a clean unmount", how)
		}
	}

	if out, err := sysMount("mount", "-t", "fuse.ezfs", e.backing, e.mnt, "-o", "allow_other,passphrase_file="+pass); err != nil {
		t.Fatalf("mount -t fuse.ezfs: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(zone, "g"), []byte("new"), 0o644); err != nil {
		t.Errorf("write through the helper's mount: %v", err)
	}
	check("mount -t fuse.ezfs")

	fstab := filepath.Join(t.TempDir(), "fstab")
	line := e.backing + " " + e.mnt + " fuse.ezfs defaults,noauto,nofail,_netdev,x-systemd.requires=vault.service,x-systemd.automount,allow_other,rw,noatime,sharedstorage,passphrase_file=" + pass + " 0 0\n"
	if err := os.WriteFile(fstab, []byte("# test fstab\n"+line), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := sysMount("mount", "-T", fstab, e.mnt); err != nil {
		t.Fatalf("mount -T %s: %v\n%s", fstab, err, out)
	}
	if opts := e.status().Options; !slices.Contains(opts, "sharedstorage") {
		t.Errorf("fstab: status shows options %q, without sharedstorage", opts)
	}
	check("fstab")

	if out, err := sysMount("mount", "-t", "fuse.ezfs", e.backing, e.mnt, "-o", "passphrase="+passphrase); err == nil || e.mounted() {
		t.Errorf("a passphrase in the option string was taken: %v\n%s", err, out)
	} else if !strings.Contains(out, "never taken from the option string") {
		t.Errorf("refusal does not say why: %s", out)
	}
	if out, err := sysMount("mount", "-t", "fuse.ezfs", e.backing, e.mnt, "-o", "bogus,passphrase_file="+pass); err == nil || e.mounted() {
		t.Errorf("an unknown option was taken: %v\n%s", err, out)
	}
}
