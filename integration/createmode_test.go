package integration

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestCreateMode0000: open(name, O_CREAT|O_WRONLY, 0000) makes a file of mode 0000, as
// on the disk: in stat through the mount, at once and after the attribute timeout, and
// on the backing file; in a zone and outside, on a private and on a shared mount.
func TestCreateMode0000(t *testing.T) {
	old := syscall.Umask(0o022)
	t.Cleanup(func() { syscall.Umask(old) })
	for _, m := range []struct {
		name string
		opts []string
	}{{"private", nil}, {"shared", []string{"allow_other"}}} {
		t.Run(m.name, func(t *testing.T) {
			e := newEnv(t, m.opts...)
			zone := e.zone("z", "k")
			plain := filepath.Join(e.mnt, "plain")
			if err := os.Mkdir(plain, 0o755); err != nil {
				t.Fatal(err)
			}
			for _, dir := range []string{zone, plain} {
				t.Run(map[string]string{zone: "zone", plain: "plain"}[dir], func(t *testing.T) {
					p := filepath.Join(dir, "mode0000")
					fd, err := syscall.Open(p, syscall.O_CREAT|syscall.O_WRONLY, 0)
					if err != nil {
						t.Fatal(err)
					}
					var st syscall.Stat_t
					if err := syscall.Fstat(fd, &st); err != nil {
						t.Fatal(err)
					}
					if perm := st.Mode & 0o7777; perm != 0 {
						t.Errorf("fstat through the mount of the open file: mode %#o, want 0", perm)
					}
					if err := syscall.Close(fd); err != nil {
						t.Fatal(err)
					}
					check := func(when, path string) {
						t.Helper()
						var st syscall.Stat_t
						if err := syscall.Lstat(path, &st); err != nil {
							t.Fatalf("%s: %v", when, err)
						}
						if st.Mode&syscall.S_IFMT != syscall.S_IFREG || st.Mode&0o7777 != 0 {
							t.Errorf("%s: mode %#o, want %#o", when, st.Mode, syscall.S_IFREG)
						}
					}
					check("stat through the mount", p)
					check("stat of the backing file", e.backingOf(p))
					time.Sleep(1500 * time.Millisecond) // past the attribute timeout
					check("stat through the mount after 1.5 s", p)
					check("stat of the backing file after 1.5 s", e.backingOf(p))
				})
			}
		})
	}
}
