package daemon

import (
	"bufio"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/ezfs/ezfs/control"
)

// memory answers OpDebugMemory: the nodes are counted first, so that what counting
// allocates is collected with the rest.
func (d *daemon) memory() control.Memory {
	m := control.Memory{Nodes: d.fsys.Nodes()}
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.HeapBytes = ms.HeapAlloc
	m.RSSBytes = vmRSS()
	return m
}

// vmRSS is the process's resident memory from /proc/self/status, 0 if unknown.
func vmRSS() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kib, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kib << 10
		}
	}
	return 0
}
