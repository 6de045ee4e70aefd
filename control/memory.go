package control

// OpDebugMemory reports the daemon's memory (Memory) after a garbage collection that
// gives all free memory back to the system. It is a diagnostic for tests and
// benchmarks (ezfs has no command for it): the collection costs the daemon a pause
// of a few milliseconds per 100,000 inodes it holds.
const OpDebugMemory = "debug.memory"

// Memory is the daemon's memory as OpDebugMemory measures it.
type Memory struct {
	// HeapBytes is what the Go heap holds live (runtime.MemStats.HeapAlloc).
	HeapBytes uint64 `json:"heap_bytes"`
	// RSSBytes is the daemon's resident memory (VmRSS), free memory given back.
	RSSBytes uint64 `json:"rss_bytes"`
	// Nodes counts the inodes the kernel knows, as the node tree holds them (names
	// in it; a file that lost all its names is not counted).
	Nodes int `json:"nodes"`
}
