package fs

import "syscall"

// DropKeyCaches has the kernel drop the cached pages of every file it knows in the
// zones of key name, so that reads it would answer from its page cache come to the
// daemon, which refuses them while the key is not active (usable). It returns how
// many files it asked for.
func (f *FS) DropKeyCaches(name string) int {
	f.liveMu.Lock()
	var ns []*node
	for _, n := range f.live {
		if z := n.zone.Load(); z != nil && z.Key == name {
			ns = append(ns, n)
		}
	}
	f.liveMu.Unlock()
	for _, n := range ns {
		// No lock is held: the kernel may wait for a read of the file in flight.
		if errno := n.NotifyContent(0, 0); errno != 0 && errno != syscall.ENOENT {
			f.log.Printf("drop the cached pages of %s: %v", n.path(), errno)
		}
	}
	return len(ns)
}
