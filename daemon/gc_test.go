package daemon

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestGCPercentFor(t *testing.T) {
	for _, c := range []struct {
		live uint64
		want int
	}{
		{0, 100},
		{1 << 20, 100},
		{gcHeadroom, 100},
		{2 * gcHeadroom, 50},
		{4 * gcHeadroom, 25},
		{5 * gcHeadroom, gcMinPercent},
		{50 << 20, gcMinPercent},
		{gcRampFrom, gcMinPercent},
		{(gcRampFrom + gcRampTo) / 2, (gcMinPercent + 100) / 2},
		{gcRampTo, 100},
		{1 << 34, 100},
	} {
		if got := gcPercentFor(c.live); got != c.want {
			t.Errorf("gcPercentFor(%d) = %d, want %d", c.live, got, c.want)
		}
	}
}

// The tuner runs after every collection and sets GOGC for the live heap.
func TestTuneGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	t.Setenv("GOGC", "")
	gcPercent.Store(0)
	tuneGC()
	hold := make([][]byte, 0, 64)
	for range 64 {
		hold = append(hold, make([]byte, 1<<20)) // 64 MiB live: the lowest percent
	}
	for deadline := time.Now().Add(10 * time.Second); gcPercent.Load() != gcMinPercent; {
		if time.Now().After(deadline) {
			t.Fatalf("GOGC %d after collections with 64 MiB live, want %d", gcPercent.Load(), gcMinPercent)
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if p := debug.SetGCPercent(100); p != gcMinPercent {
		t.Fatalf("the runtime's GOGC is %d, want %d", p, gcMinPercent)
	}
	runtime.KeepAlive(hold)
}
