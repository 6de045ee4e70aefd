package fs

import (
	"path/filepath"
	"testing"
	"time"
)

// TestXattrPrefetchBounds: the queue never grows past its bound, and workers end once
// it is drained, whether the paths exist or not.
func TestXattrPrefetchBounds(t *testing.T) {
	dir := t.TempDir()
	var p xattrPrefetch
	p.workers = prefetchWorkers // as if every worker were busy: nothing drains
	for i := 0; i < prefetchQueue+100; i++ {
		p.add(filepath.Join(dir, "missing"))
	}
	if got := len(p.queue); got != prefetchQueue {
		t.Fatalf("queue holds %d paths, want the bound %d", got, prefetchQueue)
	}
	for i := 0; i < prefetchWorkers; i++ {
		p.work() // the busy workers finish: the first drains the queue
	}
	if len(p.queue) != 0 || p.workers != 0 {
		t.Fatalf("after draining: %d paths queued, %d workers", len(p.queue), p.workers)
	}

	// Started by add, workers end by themselves.
	for i := 0; i < 100; i++ {
		p.add(dir)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		p.mu.Lock()
		queued, workers := len(p.queue), p.workers
		p.mu.Unlock()
		if queued == 0 && workers == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s: %d paths queued, %d workers", queued, workers)
		}
		time.Sleep(time.Millisecond)
	}
}
