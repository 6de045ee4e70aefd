package daemon

import (
	"os"
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"sync"
	"sync/atomic"
)

// Most of a busy daemon's heap is long-lived: go-fuse's and ezfs's nodes for the inodes
// the kernel caches, about 450 bytes each. Go's default (GOGC=100) lets the heap gather
// as much garbage as it holds live before it collects, and the daemon keeps that
// memory: with 100,000 cached inodes, 118 MiB of RSS where 75 MiB are needed. A low
// GOGC throughout would cost small heaps dearly (at 20, a collection every few
// hundred opens: a quarter more time per open of a small file), so the daemon sizes
// the headroom after every collection: gcHeadroom bytes of garbage, but at least
// gcMinPercent and at most Go's 100 % of the live heap. Small heaps collect as Go's
// default does; 100,000 cached inodes (a 50 MB heap) collect at 20 %: 79-85 MiB of
// RSS, for about 1 % more CPU.
// A big heap marks slower per byte than a small one (it no longer fits the caches),
// so at a fixed percent the collector's share of a request grows with the heap: at a
// million cached inodes (a 400 MB heap) a create cost 1.4x what it cost at 100,000.
// From gcRampFrom of live heap the lowest percent therefore rises again, linearly to
// 100 at gcRampTo. Measured, see docs/DESIGN.md. GOGC in the daemon's environment
// turns this off.
const (
	gcHeadroom   = 8 << 20
	gcMinPercent = 20
	gcRampFrom   = 128 << 20
	gcRampTo     = 640 << 20
)

// gcPercentFor is the GOGC for a live heap of live bytes.
func gcPercentFor(live uint64) int {
	if live == 0 {
		return 100
	}
	floor := uint64(gcMinPercent)
	if live > gcRampFrom {
		floor += (100 - gcMinPercent) * (min(live, gcRampTo) - gcRampFrom) / (gcRampTo - gcRampFrom)
	}
	return int(min(100, max(floor, uint64(gcHeadroom)*100/live)))
}

var gcTuning sync.Once

// tuneGC starts sizing the collector's headroom after every collection.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		gcTuning.Do(afterGC)
	}
}

var gcPercent atomic.Int64 // the GOGC last set; 0 before the first

// afterGC runs retuneGC once the next collection is done (a cleanup of an object that
// nothing references runs after the collection that finds it), and again after each.
func afterGC() {
	runtime.AddCleanup(new(gcCycle), func(struct{}) {
		retuneGC()
		afterGC()
	}, struct{}{})
}

// gcCycle is big enough to have an allocation of its own (the tiny allocator puts
// objects under 16 bytes together, and their cleanups may never run).
type gcCycle struct{ _ [16]byte }

// retuneGC sets GOGC for the live heap the last collection found.
func retuneGC() {
	s := []rtmetrics.Sample{{Name: "/gc/heap/live:bytes"}}
	rtmetrics.Read(s)
	if s[0].Value.Kind() != rtmetrics.KindUint64 {
		return
	}
	if p := int64(gcPercentFor(s[0].Value.Uint64())); gcPercent.Swap(p) != p {
		debug.SetGCPercent(int(p))
	}
}
