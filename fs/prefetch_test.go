package fs

import (
	"testing"
	"time"

	"github.com/ezfs/ezfs/backing"
)

// TestXattrPrefetchBounds: the queue never grows past its bound, and workers end once
// it is drained, whether the paths exist or not.
func TestXattrPrefetchBounds(t *testing.T) {
	root, err := backing.OpenRoot(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	p := xattrPrefetch{root: root}
	p.workers = prefetchWorkers // as if every worker were busy: nothing drains
	for i := 0; i < prefetchQueue+100; i++ {
		p.add("missing")
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
		p.add("")
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
