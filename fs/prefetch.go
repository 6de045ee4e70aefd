package fs

import (
	"sync"

	"github.com/ezfs/ezfs/backing"
	"github.com/ezfs/ezfs/zones"
	"golang.org/x/sys/unix"
)

// Bounds of the xattr prefetch: paths waiting, and reads in flight.
const (
	prefetchQueue   = 4096
	prefetchWorkers = 8
)

// xattrPrefetch reads the EDEK of zone files the kernel has just looked up, in the
// background and several at once, so that their xattr blocks are in the page cache
// when they are asked for. The EDEK does not fit in the inode (docs/DESIGN.md), so on a
// cold cache the first xattr request for a zone file waits for a disk read: `ls -l`
// asks for two per file (security.selinux, system.posix_acl_access) and unlink frees
// the block, one file after the other. A listing looks up a whole directory batch
// first (READDIRPLUS), so the reads of the batch overlap. What is read is dropped;
// the page cache keeps it. When the queue is full, paths are left out.
type xattrPrefetch struct {
	root    *backing.Root // set before the mount serves
	mu      sync.Mutex
	queue   []string // guarded by mu; at most prefetchQueue
	workers int      // goroutines draining queue; guarded by mu; at most prefetchWorkers
}

// add queues the file at rel, relative to the backing root.
func (p *xattrPrefetch) add(rel string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queue) >= prefetchQueue {
		return
	}
	p.queue = append(p.queue, rel)
	if p.workers < prefetchWorkers {
		p.workers++
		go p.work()
	}
}

// work drains the queue and ends when it is empty, so an idle mount holds no goroutine.
func (p *xattrPrefetch) work() {
	for {
		p.mu.Lock()
		if len(p.queue) == 0 {
			p.queue = nil // let a long queue's array go
			p.workers--
			p.mu.Unlock()
			return
		}
		rel := p.queue[0]
		p.queue = p.queue[1:]
		p.mu.Unlock()
		// Errors do not matter: the file may be gone or renamed, the read only warms.
		if fd, err := p.root.Open(rel, unix.O_PATH, 0); err == nil {
			zones.PeekEDEK(fd)
			unix.Close(fd)
		}
	}
}
