package fsck

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/ezfs/ezfs/zones"
)

// item is one entry of a zone to check.
type item struct {
	z   *zoneRun
	rel string // relative to the zone root
	typ os.FileMode
}

// fileResult is what checking one entry found.
type fileResult struct {
	z     *zoneRun
	other bool // not a regular file: counted, never opened
	gone  bool // removed or replaced since it was listed
	link  bool // another name of an inode already checked
	empty bool
	// notChecked: its key is disabled or deleted (counted, not checked).
	notChecked bool
	hasRef     bool
	ref        verRef
	bytes      int64
	problems   []Problem
	walkErr    bool  // the zone could not be walked to its end
	fatal      error // the run cannot go on (a key provider failed)
}

// checkFiles walks every zone whose root is its own and checks its entries in
// parallel; one goroutine adds up the results.
func (c *checker) checkFiles() error {
	items := make(chan item, 1024)
	results := make(chan fileResult, 1024)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(items)
		c.walkZones(items, results)
	}()
	for w := 0; w < max(1, c.workers()); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for it := range items {
				if !it.typ.IsRegular() {
					results <- fileResult{z: it.z, other: true}
					continue
				}
				results <- c.checkFile(it, &buf)
			}
		}()
	}
	go func() { wg.Wait(); close(results) }()
	return c.collect(results)
}

func (c *checker) workers() int {
	if c.o.Workers > 0 {
		return c.o.Workers
	}
	return 4
}

func (c *checker) walkZones(items chan<- item, results chan<- fileResult) {
	for _, z := range c.zones {
		if !z.walk {
			continue
		}
		err := zones.Walk(c.ctx, c.fsys.Root(), z.entry.Path, func(rel string, typ os.FileMode) bool {
			select {
			case items <- item{z: z, rel: rel, typ: typ}:
				return true
			case <-c.ctx.Done():
				return false
			}
		})
		if err != nil && c.ctx.Err() == nil {
			results <- fileResult{z: z, walkErr: true, problems: []Problem{{Kind: KindUnreadable, Path: z.entry.Path,
				Zone: z.entry.Path, Detail: fmt.Sprintf("walk the zone: %v; the files after it were not checked", err)}}}
		}
	}
}

// collect adds up the results; the first fatal error stops the run.
func (c *checker) collect(results <-chan fileResult) error {
	var fatal error
	var files int64
	last := time.Now()
	for r := range results {
		if r.fatal != nil {
			if fatal == nil {
				fatal = r.fatal
				c.cancel()
			}
			continue
		}
		c.add(r)
		files++
		if c.o.Progress != nil && time.Since(last) >= 200*time.Millisecond {
			c.o.Progress(files, r.z.entry.Path)
			last = time.Now()
		}
	}
	if fatal != nil {
		return fatal
	}
	if err := c.ctx.Err(); err != nil {
		return err
	}
	for _, z := range c.zones {
		z.rep.Checked = z.walk
		c.rep.Zones = append(c.rep.Zones, *z.rep)
		c.rep.Files += z.rep.Files
		c.rep.Links += z.rep.Links
		c.rep.Others += z.rep.Others
		c.rep.Bytes += z.rep.Bytes
		c.rep.NotChecked += z.rep.NotChecked
	}
	return nil
}

func (c *checker) add(r fileResult) {
	zr := r.z.rep
	for _, p := range r.problems {
		c.problem(p)
	}
	switch {
	case r.walkErr:
		r.z.walk = false
	case r.gone:
	case r.other:
		zr.Others++
	case r.link:
		zr.Links++
	default:
		zr.Files++
		zr.Bytes += r.bytes
		if r.empty {
			zr.Empty++
		}
		if r.notChecked {
			zr.NotChecked++
		}
		if r.hasRef {
			if r.z.used == nil {
				r.z.used = map[verRef]int64{}
			}
			r.z.used[r.ref]++
			zr.Versions[r.ref.String()]++
		}
	}
}
