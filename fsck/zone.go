package fsck

import (
	"errors"
	"fmt"

	"github.com/ezfs/ezfs/backing"
	"github.com/ezfs/ezfs/keystore"
	"github.com/ezfs/ezfs/zones"
	"golang.org/x/sys/unix"
)

// zoneRun is one registered zone being checked.
type zoneRun struct {
	entry zones.Entry
	rec   *keystore.Zone
	// walk says its root is the zone's, so its files are checked.
	walk bool
	rep  *ZoneReport
	// used counts the zone's files per key version (collector only).
	used map[verRef]int64
}

// checkRoot judges zone z's root by the file system's rule (fs.ZoneHealth, as the
// daemon does at mount) and, with Repair, puts a missing marker back.
func (c *checker) checkRoot(z *zoneRun) {
	z.rep = &ZoneReport{Path: z.entry.Path, ID: z.rec.ID, Key: z.rec.Key, Versions: map[string]int64{}}
	// As the daemon at mount: a root found at the zone's path with the zone's marker is
	// the zone's, whatever inode the keystore had (a backing dir restored from a copy).
	if dev, ino, marked, err := c.fsys.Locate(z.entry.Path, z.entry.Zone); err == nil && marked {
		z.entry.Dev, z.entry.Ino = dev, ino
	}
	why := c.fsys.ZoneHealth(z.entry)
	if why == "" {
		z.walk = true
		return
	}
	kind, ours := c.rootKind(z)
	z.walk = ours
	p := Problem{Kind: kind, Path: z.entry.Path, Zone: z.entry.Path, Detail: why}
	if kind == KindMarkerMissing && c.o.Repair {
		err := c.restoreMarker(z)
		c.audit.Action("fsck.repair", map[string]any{"what": "zone marker", "zone": z.rec.ID, "path": "/" + z.entry.Path}, err)
		if err != nil {
			p.Detail += "; not repaired: " + err.Error()
		} else {
			p.Repaired = true
			p.Detail += "; restored from the keystore"
		}
	}
	c.problem(p)
}

// openRoot opens zone z's root directory and checks that it is the one the keystore
// recorded (ours; any directory at its path when no inode was recorded).
func (c *checker) openRoot(z *zoneRun) (fd int, ours bool, err error) {
	fd, err = c.fsys.Root().Open(z.entry.Path, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return -1, false, err
	}
	var st unix.Stat_t
	if err := backing.Stat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, false, err
	}
	return fd, z.entry.Ino == 0 || (st.Dev == z.entry.Dev && st.Ino == z.entry.Ino), nil
}

// rootKind says what is wrong with a root fs.ZoneHealth found damaged, and whether its
// files can be checked as the zone's.
func (c *checker) rootKind(z *zoneRun) (Kind, bool) {
	fd, ours, err := c.openRoot(z)
	if err != nil {
		return KindZoneRoot, false
	}
	defer unix.Close(fd)
	if !ours {
		return KindZoneRoot, false
	}
	m, err := zones.ReadMarker(fd)
	if err == nil && m == nil {
		return KindMarkerMissing, true
	}
	return KindMarkerMismatch, true
}

// restoreMarker writes zone z's marker on its root, which must be the directory the
// keystore recorded, by inode, and carry no marker.
func (c *checker) restoreMarker(z *zoneRun) error {
	if z.entry.Ino == 0 {
		return errors.New("the keystore has no inode for the zone root: mount once, then run fsck again")
	}
	fd, ours, err := c.openRoot(z)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if !ours {
		return fmt.Errorf("/%s is not the zone's root directory", z.entry.Path)
	}
	if m, err := zones.ReadMarker(fd); err != nil || m != nil {
		return fmt.Errorf("/%s has a marker now", z.entry.Path)
	}
	return zones.WriteMarker(fd, z.entry.Zone)
}
