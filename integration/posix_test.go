package integration

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
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
