package integration

import (
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/ezfs/ezfs/crypto"
	"github.com/hanwen/go-fuse/v2/posixtest"
	"golang.org/x/sys/unix"
)

// TestPosix runs every test of go-fuse's posixtest.All in a zone and outside zones,
// each in a fresh directory of one ezfs mount; and outside zones of a mount whose plain
// files are served through the daemon (-o nopassthrough); and in a zone of a shared
// mount (-o allow_other), where the kernel checks permissions and ACLs and leaves the
// umask to the daemon.
func TestPosix(t *testing.T) {
	e := newEnv(t)
	zone := e.zone("zone", "posix")
	plain := filepath.Join(e.mnt, "plain")
	if err := os.Mkdir(plain, 0o755); err != nil {
		t.Fatal(err)
	}
	daemon := newEnv(t, "nopassthrough").mnt
	shared := newEnv(t, "allow_other").zone("zone", "posix")
	runPosix(t, []struct{ name, dir string }{{"zone", zone}, {"plain", plain}, {"nopassthrough", daemon}, {"shared", shared}})
}

// runPosix runs every test of posixtest.All in a fresh directory of each place.
func runPosix(t *testing.T, places []struct{ name, dir string }) {
	names := make([]string, 0, len(posixtest.All))
	for n := range posixtest.All {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, where := range places {
		t.Run(where.name, func(t *testing.T) {
			for _, n := range names {
				t.Run(n, func(t *testing.T) {
					dir := filepath.Join(where.dir, n)
					if err := os.Mkdir(dir, 0o755); err != nil {
						t.Fatal(err)
					}
					posixtest.All[n](t, dir)
				})
			}
		})
	}
}

// TestSetattrOpenFile: fchmod, fchown and futimens of an open file come to the daemon
// without a handle, and it makes them through the file's own backing descriptor. Each
// must reach the backing file, for zone and plain files, and the reply and a later
// stat must show it.
func TestSetattrOpenFile(t *testing.T) {
	e := newEnv(t)
	zone := e.zone("zone", "k")
	plain := filepath.Join(e.mnt, "plain")
	if err := os.Mkdir(plain, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, where := range []struct {
		dir         string
		backingSize int64 // of the 10 bytes written
	}{{zone, crypto.BackingSize(10)}, {plain, 10}} {
		t.Run(filepath.Base(where.dir), func(t *testing.T) {
			p := filepath.Join(where.dir, "f")
			f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.Write([]byte("some bytes")); err != nil {
				t.Fatal(err)
			}
			fd := int(f.Fd())
			self := "/proc/self/fd/" + strconv.Itoa(fd) // utimensat by it: no handle either
			when := []unix.Timespec{{Sec: 1_000_000_000, Nsec: 5}, {Sec: 1_200_000_000, Nsec: 7}}
			if err := unix.Fchmod(fd, 0o640); err != nil {
				t.Fatal(err)
			}
			if err := unix.Fchown(fd, 1234, 5678); err != nil {
				t.Fatal(err)
			}
			if err := unix.UtimesNanoAt(unix.AT_FDCWD, self, when, 0); err != nil {
				t.Fatal(err)
			}
			check := func(what, path string, size int64) {
				t.Helper()
				var st unix.Stat_t
				if err := unix.Lstat(path, &st); err != nil {
					t.Fatal(err)
				}
				if st.Mode&0o7777 != 0o640 || st.Uid != 1234 || st.Gid != 5678 || st.Atim != when[0] || st.Mtim != when[1] || st.Size != size {
					t.Fatalf("%s: mode %o, owner %d:%d, atime %v, mtime %v, size %d", what, st.Mode&0o7777, st.Uid, st.Gid, st.Atim, st.Mtim, st.Size)
				}
			}
			check("through the mount", p, 10)
			check("on the disk", e.backingOf(p), where.backingSize)
			// touch: utimensat with no times sets both to now.
			before := time.Now().Add(-2 * time.Second)
			if err := unix.UtimesNanoAt(unix.AT_FDCWD, self, nil, 0); err != nil {
				t.Fatal(err)
			}
			var st unix.Stat_t
			if err := unix.Stat(e.backingOf(p), &st); err != nil {
				t.Fatal(err)
			}
			if mt := time.Unix(st.Mtim.Unix()); mt.Before(before) {
				t.Fatalf("touch of an open file left the backing mtime at %v", mt)
			}
		})
	}
}
