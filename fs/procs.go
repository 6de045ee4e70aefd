package fs

import (
	"os"
	"runtime"
	"sync"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// The daemon's Ps and go-fuse's readers (docs/DESIGN.md, "two readers, two spare Ps").
//
// go-fuse keeps goroutines blocked in read(2) on /dev/fuse between requests, as many
// as GOMAXPROCS was when the server was made (at least two), and a goroutine blocked in
// a system call holds its P. When they hold every P, the runtime's sysmon hands each P
// to a fresh thread, and the reader woken by the next request must wait for a P back:
// two thread switches per request. So the server is made with GOMAXPROCS at the CPU
// count (two readers on a 2-CPU machine), and two more Ps are given afterwards, which
// the blocked readers leave idle. Both matter: with the readers made after the raise
// (four), ls -l of 100,000 files took a fifth longer and a create a third; without the
// raise, synchronous 4 KiB reads lost a fifth of their rate and streaming reads a
// third. A GOMAXPROCS the user set is kept for both.

var (
	procsMu   sync.Mutex
	baseProcs int // GOMAXPROCS before the first raise; 0 before the first server
)

// newServer makes the FUSE server with go-fuse's readers sized from the CPU count,
// then leaves the scheduler two spare Ps.
func newServer(fs fuse.RawFileSystem, mountpoint string, o *fuse.MountOptions) (*fuse.Server, error) {
	if os.Getenv("GOMAXPROCS") != "" {
		return fuse.NewServer(fs, mountpoint, o)
	}
	procsMu.Lock()
	defer procsMu.Unlock()
	if baseProcs == 0 {
		baseProcs = runtime.GOMAXPROCS(0)
	}
	runtime.GOMAXPROCS(baseProcs)
	srv, err := fuse.NewServer(fs, mountpoint, o)
	runtime.GOMAXPROCS(baseProcs + 2)
	return srv, err
}
