package keystore

import "sync"

// keyCache is what every data request asks of the keystore, kept in memory: each zone
// key's newest version (file creates) and lifecycle state (Usable). A Store's own
// changes update it; Watch replaces it with an empty one when anyone changes the
// keystore. A caller takes the cache before it reads the keystore and fills that one:
// a fill that raced with a change lands in a cache already dropped.
type keyCache struct {
	mu     sync.Mutex
	latest map[string]uint32 // guarded by mu
	states sync.Map          // name → lifecycle state string
}

func newKeyCache() *keyCache { return &keyCache{latest: map[string]uint32{}} }

func (c *keyCache) getLatest(name string) (uint32, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.latest[name]
	return v, ok
}

func (c *keyCache) setLatest(name string, v uint32) {
	c.mu.Lock()
	c.latest[name] = v
	c.mu.Unlock()
}

// cache is the current cache.
func (s *Store) cache() *keyCache { return s.caches.Load() }

// dropCaches forgets everything cached: the keystore changed.
func (s *Store) dropCaches() { s.caches.Store(newKeyCache()) }
