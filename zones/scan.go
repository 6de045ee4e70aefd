package zones

import (
	"context"
	"errors"
	"fmt"

	"github.com/ezfs/ezfs/backing"
	"github.com/ezfs/ezfs/crypto"
	"golang.org/x/sys/unix"
)

// Refs is what a fresh scan found: the files that reference each zone key version,
// read from their EDEKs now (not from a job's counts).
type Refs struct {
	// Files counts, per key name and version, the files whose EDEK is under it.
	Files map[string]map[uint32]int64
	// Unattributed counts files outside every registered zone whose EDEK (format v2)
	// does not name its key: they may be under any key (left by a zone that no longer
	// exists, or copied onto the backing disk).
	Unattributed int64
	// Unreadable counts files whose EDEK does not parse: damaged, or in a format this
	// binary does not know. Such a file may be under any key: the scan is refused.
	Unreadable int64
}

// checkReadable refuses (ErrDamaged) a scan that found EDEKs it could not parse: a
// decision that destroys key material cannot rest on it.
func (r *Refs) checkReadable() error {
	if r.Unreadable > 0 {
		return fmt.Errorf("%d files have an EDEK this ezfs cannot read (damaged, or of a newer format): they may be under any key; run 'ezfs fsck' first: %w",
			r.Unreadable, ErrDamaged)
	}
	return nil
}

// Of is how many files reference name (version 0: any version of it).
func (r *Refs) Of(name string, version uint32) int64 {
	var n int64
	for v, c := range r.Files[name] {
		if version == 0 || v == version {
			n += c
		}
	}
	return n
}

// ScanRefs reads the EDEK of every regular file in the zones zs, or, with whole, of
// every regular file under the backing root (so that files of zones no longer
// registered are seen too), and counts them by key version. A file inside a zone is
// under the zone's key (a v1 record names its own); outside every zone only a v1
// record says its key. Files without an EDEK are not counted; an EDEK that does not
// parse fails the scan (ErrDamaged, with the count), since it may be under any key.
func ScanRefs(ctx context.Context, b *backing.Root, zs []Entry, whole bool) (*Refs, error) {
	refs := &Refs{Files: map[string]map[uint32]int64{}}
	zoneOf := func(rel string) *Zone {
		for _, e := range zs {
			if within(rel, e.Path) {
				return e.Zone
			}
		}
		return nil
	}
	var err error
	visit := func(rel string) bool {
		err = refs.count(b, rel, zoneOf(rel))
		return err == nil && ctx.Err() == nil
	}
	if whole {
		if werr := walk(ctx, b, "", "", "", visit); werr != nil {
			return nil, werr
		}
	} else {
		for _, e := range zs {
			zrel := e.Path
			werr := walk(ctx, b, zrel, "", "", func(rel string) bool { return visit(joinRel(zrel, rel)) })
			if werr != nil {
				return nil, werr
			}
			if err != nil {
				break
			}
		}
	}
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		err = refs.checkReadable()
	}
	return refs, err
}

// count adds the file at rel (in zone z, or nil) to refs.
func (refs *Refs) count(b *backing.Root, rel string, z *Zone) error {
	fd, err := b.Open(rel, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOATIME, 0)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) {
		return nil // removed or replaced while we walked
	}
	if err != nil {
		return fmt.Errorf("scan /%s: %w", rel, err)
	}
	defer unix.Close(fd)
	rec, err := ReadEDEK(fd)
	if errors.Is(err, ErrNoEDEK) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("scan /%s: %w", rel, err)
	}
	e, err := crypto.ParseEDEK(rec)
	if err != nil {
		refs.Unreadable++
		return nil
	}
	zoneKey := ""
	if z != nil {
		zoneKey = z.Key
	}
	name := e.KeyNameIn(zoneKey)
	if name == "" {
		refs.Unattributed++
		return nil
	}
	if refs.Files[name] == nil {
		refs.Files[name] = map[uint32]int64{}
	}
	refs.Files[name][e.KeyVersion]++
	return nil
}
