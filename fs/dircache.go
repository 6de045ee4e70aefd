package fs

import (
	"sync"

	"golang.org/x/sys/unix"
)

// dirCacheSize is how many directory descriptors the cache keeps: enough for the
// directories a burst of requests works in (a listing, an untar, a build), few enough
// that the daemon's descriptors stay bounded whatever the kernel caches.
const dirCacheSize = 16

// dirCache keeps O_PATH descriptors of recently used directory nodes, so that a run of
// lookups and creates in one directory resolves its path once. A descriptor holds the
// directory's inode, which is the node's identity: it stays right when the directory
// is renamed, also on the backing disk directly, and is dropped when the kernel
// forgets the node.
type dirCache struct {
	mu      sync.Mutex
	entries [dirCacheSize]dirEntry // guarded by mu
	next    int                    // guarded by mu: the slot to reuse next
}

type dirEntry struct {
	n     *node
	fd    int
	refs  int  // requests using fd now
	stale bool // dropped while in use: the last user closes fd
}

// dirRef is a directory descriptor lent for one request; release gives it back.
type dirRef struct {
	fd    int
	cache *dirCache // nil: fd is the request's own (or the root's, when own is false)
	own   bool
}

func (d dirRef) release() {
	switch {
	case d.cache != nil:
		d.cache.put(d.fd)
	case d.own:
		unix.Close(d.fd)
	}
}

// get returns a cached descriptor of n, or -1.
func (c *dirCache) get(n *node) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.entries {
		if e := &c.entries[i]; e.n == n && !e.stale {
			e.refs++
			return e.fd
		}
	}
	return -1
}

// add caches fd, a descriptor of n that the caller uses now; false if every slot is
// busy (the caller then owns fd).
func (c *dirCache) add(n *node, fd int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := 0; k < dirCacheSize; k++ {
		i := (c.next + k) % dirCacheSize
		e := &c.entries[i]
		if e.n != nil && e.refs > 0 {
			continue
		}
		if e.n != nil {
			unix.Close(e.fd)
		}
		*e = dirEntry{n: n, fd: fd, refs: 1}
		c.next = (i + 1) % dirCacheSize
		return true
	}
	return false
}

func (c *dirCache) put(fd int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.entries {
		e := &c.entries[i]
		if e.n == nil || e.fd != fd {
			continue
		}
		if e.refs--; e.refs == 0 && e.stale {
			unix.Close(e.fd)
			*e = dirEntry{}
		}
		return
	}
}

// drop forgets n's descriptor (the kernel forgot n).
func (c *dirCache) drop(n *node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.entries {
		e := &c.entries[i]
		if e.n != n {
			continue
		}
		if e.refs > 0 {
			e.stale = true
			continue
		}
		unix.Close(e.fd)
		*e = dirEntry{}
	}
}
