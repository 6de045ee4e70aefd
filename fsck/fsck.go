// Package fsck checks a backing directory offline: every registered zone's root and
// marker against the keystore, every zone file's EDEK (one unwrap per zone key version
// for the whole run), its content header, its tail (a write torn by a crash) and, with
// Full, every block; files stored in the clear inside zones; and zone keys and versions
// no file uses. It holds the keystore's lock for the whole run, so it never runs beside
// a daemon serving the same keystore. With Repair it cuts torn tails to their last
// intact block and restores missing zone markers from the keystore, and nothing else:
// it never deletes a file.
package fsck

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"sync"
	"time"

	"github.com/ezfs/ezfs/fs"
	"github.com/ezfs/ezfs/keystore"
	"github.com/ezfs/ezfs/keystore/providers"
	"github.com/ezfs/ezfs/zones"
)

// Options describe a run.
type Options struct {
	Backing  string // canonical path of the backing directory
	Keystore string // canonical path of the keystore folder, or an etcd location
	// Secrets returns the credentials of the keystore's main key versions (as `ezfs
	// mount` gathers them); it is called once the keystore is locked.
	Secrets func(mks []*keystore.MainKey) (providers.Secrets, error)
	// Opener, if set, opens providers instead of Secrets (tests).
	Opener keystore.Opener
	Full   bool // authenticate every block
	Repair bool // cut torn tails, restore missing markers
	// Workers is the number of files checked in parallel (default 4).
	Workers int
	// Progress, if set, is called about every 200 ms with the files checked so far.
	Progress func(files int64, zone string)
}

// Run checks the backing directory. An error means it could not check (the keystore is
// locked or missing, a key provider does not answer or refuses the credentials); the
// problems it found are in the report.
func Run(ctx context.Context, o Options) (*Report, error) {
	start := time.Now()
	store, err := keystore.Open(o.Keystore)
	if errors.Is(err, keystore.ErrLocked) {
		return nil, fmt.Errorf("keystore %s is locked: %s is mounted, or another fsck runs; unmount it first: %w", o.Keystore, o.Backing, err)
	}
	if err != nil {
		return nil, err
	}
	defer store.Close()
	audit, err := keystore.OpenAudit(o.Keystore)
	if err != nil {
		return nil, err
	}
	defer audit.Close()
	open := o.Opener
	if open == nil {
		mks, err := store.MainKeys()
		if err != nil {
			return nil, err
		}
		sec, err := o.Secrets(mks)
		if err != nil {
			return nil, err
		}
		defer sec.Zero()
		open = providers.Opener(sec)
	}
	// One unwrap per zone key version for the run: nothing is evicted before it ends.
	ring := keystore.NewKeyringOpener(store, open, audit, 24*time.Hour)
	defer ring.Close()
	c, err := newChecker(ctx, o, store, ring, audit)
	if err != nil {
		return nil, err
	}
	defer c.close()
	audit.Action("fsck.start", map[string]any{"backing": o.Backing, "full": o.Full, "repair": o.Repair}, nil)
	rep, err := c.run()
	if err != nil {
		audit.Action("fsck.end", map[string]any{"backing": o.Backing}, err)
		return nil, err
	}
	rep.Seconds = time.Since(start).Seconds()
	if rep.Seconds > 0 {
		rep.Rate = float64(rep.Files+rep.Links) / rep.Seconds
	}
	audit.Action("fsck.end", map[string]any{"backing": o.Backing, "files": rep.Files, "problems": len(rep.Problems), "repaired": rep.Repaired}, nil)
	return rep, nil
}

// checker is one run.
type checker struct {
	o      Options
	ctx    context.Context
	cancel context.CancelFunc
	store  *keystore.Store
	audit  *keystore.Audit
	keys   *versions
	fsys   *fs.FS
	rep    *Report
	zones  []*zoneRun
	// seen holds the device and inode of hard-linked files checked, so an inode is
	// checked and counted once.
	seen sync.Map
}

func newChecker(ctx context.Context, o Options, store *keystore.Store, ring *keystore.Keyring, audit *keystore.Audit) (*checker, error) {
	recs, err := store.Zones()
	if err != nil {
		return nil, err
	}
	reg := zones.NewRegistry()
	c := &checker{o: o, store: store, audit: audit, keys: newVersions(&zones.Keys{Ring: ring}),
		rep: &Report{Backing: o.Backing, Keystore: o.Keystore, Full: o.Full, Repair: o.Repair}}
	c.ctx, c.cancel = context.WithCancel(ctx)
	for _, z := range recs {
		id, err := zones.ParseID(z.ID)
		if err != nil {
			return nil, fmt.Errorf("zone record %s: %w", z.ID, err)
		}
		e := zones.Entry{Zone: &zones.Zone{ID: id, Key: z.Key}, Path: z.Path, Dev: z.Dev, Ino: z.Ino}
		reg.Add(e)
		c.zones = append(c.zones, &zoneRun{entry: e, rec: z})
	}
	// The file system layer is built, never mounted: for its one rule on zone roots
	// and its backing root (the keystore folder hidden).
	c.fsys, err = fs.New(fs.Options{Backing: o.Backing, Hidden: keystore.Folder(o.Keystore), Zones: reg, Logger: log.New(io.Discard, "", 0)})
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (c *checker) close() {
	c.cancel()
	c.fsys.Root().Close()
}

func (c *checker) problem(p Problem) {
	c.rep.Problems = append(c.rep.Problems, p)
	if p.Repaired {
		c.rep.Repaired++
	}
}

// run checks the zone roots, then the files of every zone that has a root, then the
// keys.
func (c *checker) run() (*Report, error) {
	for _, z := range c.zones {
		c.checkRoot(z)
	}
	if err := c.checkFiles(); err != nil {
		return nil, err
	}
	if err := c.checkKeys(); err != nil {
		return nil, err
	}
	sortProblems(c.rep.Problems)
	return c.rep, nil
}
