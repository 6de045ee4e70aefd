package integration

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestXattrVisibility: what is set or removed through the mount shows at once, after
// misses for the same file (which a cache of misses would have to forget); what is set
// on the disk behind the mount's back shows within the attribute timeout (1 s);
// ezfs's own attributes never show.
func TestXattrVisibility(t *testing.T) {
	e := newEnv(t)
	zone := e.zone("z", "k")
	plain := filepath.Join(e.mnt, "plain")
	if err := os.Mkdir(plain, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{zone, plain} {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			p := filepath.Join(dir, "f")
			if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 64)
			get := func(attr string) (string, syscall.Errno) {
				n, err := unix.Lgetxattr(p, attr, buf)
				if err != nil {
					return "", errnoOf(err)
				}
				return string(buf[:n]), 0
			}
			want := func(what, attr, value string) {
				t.Helper()
				v, errno := get(attr)
				switch {
				case value == "" && errno != syscall.ENODATA:
					t.Fatalf("%s: %s is %q (%v), want ENODATA", what, attr, v, errno)
				case value != "" && (errno != 0 || v != value):
					t.Fatalf("%s: %s is %q (%v), want %q", what, attr, v, errno, value)
				}
			}
			// Misses, as ls -l makes for every file.
			want("new file", "security.selinux", "")
			want("new file", "system.posix_acl_access", "")
			want("new file", "user.ezfs.edek", "")
			// Set and removed through the mount while a listing is kept.
			if err := unix.Lsetxattr(p, "user.a", []byte("one"), 0); err != nil {
				t.Fatal(err)
			}
			want("set through the mount", "user.a", "one")
			want("set through the mount", "user.b", "")
			if err := unix.Lsetxattr(p, "user.b", []byte("two"), 0); err != nil {
				t.Fatal(err)
			}
			want("a second set", "user.b", "two")
			if err := unix.Lremovexattr(p, "user.a"); err != nil {
				t.Fatal(err)
			}
			want("removed through the mount", "user.a", "")
			want("removed through the mount", "user.b", "two")
			// Set on the disk: seen within the attribute timeout.
			want("before the disk's set", "user.c", "")
			if err := unix.Lsetxattr(e.backingOf(p), "user.c", []byte("disk"), 0); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(3 * time.Second)
			for {
				v, errno := get("user.c")
				if errno == 0 && v == "disk" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("an attribute set on the disk: %q (%v) after 3 s", v, errno)
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
}
