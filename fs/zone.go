package fs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/ezfs/ezfs/backing"
	"github.com/ezfs/ezfs/crypto"
	"github.com/ezfs/ezfs/zones"
	"golang.org/x/sys/unix"
)

// dirZone decides whether the directory open as fd (attributes st, at rel) is a zone
// root, by the rule of judgeRoot, and logs a damaged one. A damaged zone is never
// served as plain (its files would be ciphertext, and new files would be stored in
// the clear).
func (f *FS) dirZone(fd int, st *unix.Stat_t, rel string) *zones.Zone {
	j := f.judgeRoot(fd, st, nil)
	if j.entry == nil && j.marker != nil {
		if e := f.adopt(j.marker, st, rel); e != nil {
			j = rootJudgement{entry: e, marker: j.marker}
		}
	}
	switch {
	case j.why != "" && j.entry != nil:
		return f.damaged(j.entry.Zone, rel, j.why)
	case j.why != "":
		return f.damaged(&zones.Zone{ID: j.marker.ID, Key: j.marker.Key}, rel, j.why)
	case j.entry == nil:
		return nil
	}
	if j.entry.Path != rel && f.hooks != nil {
		f.hooks.ZoneFound(j.entry.Zone, rel)
	}
	return j.entry.Zone
}

// rootJudgement is what judgeRoot finds about a directory.
type rootJudgement struct {
	entry  *zones.Entry // the zone registered at the directory's inode, or nil
	marker *zones.Zone  // the directory's marker, or nil
	why    string       // why the directory is a damaged zone root; "" if it is not
}

// judgeRoot is the one rule for zone roots: the registry, by device and inode, makes
// a zone, and the marker must agree with it. e is the registered zone expected there,
// or nil to look it up by st. A registered root whose marker is missing,
// unreadable or names another zone, and a marker the registry does not know at that
// inode, make a damaged zone root.
func (f *FS) judgeRoot(fd int, st *unix.Stat_t, e *zones.Entry) rootJudgement {
	if e == nil {
		e = f.zones.ByInode(st.Dev, st.Ino)
	}
	j := rootJudgement{entry: e}
	m, err := zones.ReadMarker(fd)
	j.marker = m
	switch {
	case err != nil && errors.Is(err, unix.ENOTSUP) && j.entry == nil:
		// No attributes on this file system: no marker to go by.
	case err != nil && (j.entry != nil || errors.Is(err, crypto.ErrFormat)):
		j.why = err.Error()
		if j.marker == nil && j.entry == nil {
			j.marker = &zones.Zone{}
		}
	case err != nil:
		// A read error on a directory the registry does not know: no marker to go by.
	case j.entry != nil && m == nil:
		j.why = fmt.Sprintf("its zone marker (%s) is missing", zones.XattrZone)
	case j.entry != nil && m.ID != j.entry.Zone.ID:
		j.why = fmt.Sprintf("its zone marker names zone %s", m.IDString())
	case j.entry == nil && m != nil:
		j.why = fmt.Sprintf("the directory carries the marker of zone %s, which the keystore does not know here", m.IDString())
	}
	return j
}

// adopt returns the registered zone m names if the keystore does not know its root's
// inode yet (a record from before inodes were kept), recording it; else nil.
func (f *FS) adopt(m *zones.Zone, st *unix.Stat_t, rel string) *zones.Entry {
	e := f.zones.ByID(m.ID)
	if e == nil || e.Ino != 0 {
		return nil
	}
	e.Dev, e.Ino, e.Path = st.Dev, st.Ino, rel
	f.zones.Add(*e)
	if f.hooks != nil {
		f.hooks.ZoneFound(e.Zone, rel)
	}
	return e
}

// damaged returns a copy of z marked damaged for why, and logs it.
func (f *FS) damaged(z *zones.Zone, rel, why string) *zones.Zone {
	d := *z
	d.Damaged = why
	f.log.Printf("zone %s at /%s is damaged and not served: %s", z.IDString(), rel, why)
	return &d
}

// healZone gives node n, which go-fuse keeps for an object a lookup judged again
// (same name, inode number and generation), the zone z found now if n has the same
// zone damaged and z is served: a zone made through another daemon is damaged here
// until this daemon's keystore learns of it (its marker, unknown to the registry),
// and the nodes looked up meanwhile serve it once the registry knows it. The other
// way stays as it was: nodes of a zone that became damaged keep the zone until they
// are forgotten.
func (n *node) healZone(z *zones.Zone) {
	if old := n.zone.Load(); old != nil && old.Damaged != "" && z != nil && z.Damaged == "" && z.ID == old.ID {
		n.zone.CompareAndSwap(old, z)
	}
}

// usable fails with EIO when n is in a damaged zone: nothing in it is read, written or
// created until its marker is back; and with EACCES when the zone's key is not active
// (disabled): nothing in it is read, written or created until it is enabled, open
// files included.
func (n *node) usable() syscall.Errno {
	z := n.zone.Load()
	if z == nil {
		return 0
	}
	if z.Damaged != "" {
		return n.errno(-1, fmt.Errorf("%w: %s", zones.ErrDamaged, z.Damaged))
	}
	if err := n.fsys.keys.Usable(z.Key); err != nil {
		return n.errno(-1, err)
	}
	return 0
}

// createIn lends n's descriptor for a create in it; nothing is created in a damaged
// zone.
func (n *node) createIn() (dirRef, syscall.Errno) {
	if errno := n.usable(); errno != 0 {
		return dirRef{}, errno
	}
	return n.dir()
}

// MakeZone marks the empty directory rel (relative to the backing dir) as the root of
// zone z. It refuses non-directories, non-empty directories, the mount root, and a
// directory inside a zone, found by walking its real ancestry (not its path: a rename
// of an ancestor cannot hide a zone above it). It returns the root's identity.
func (f *FS) MakeZone(rel string, z *zones.Zone) (dev, ino uint64, err error) {
	rel = zones.Clean(rel)
	if rel == "" {
		return 0, 0, fmt.Errorf("the mount root cannot be a zone: it holds the keystore")
	}
	f.zoneMu.Lock()
	defer f.zoneMu.Unlock()
	fd, err := f.root.Open(rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if errors.Is(err, unix.ENOTDIR) {
		return 0, 0, fmt.Errorf("/%s %w", rel, zones.ErrNotDir)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("/%s: %w", rel, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := backing.Stat(fd, &st); err != nil {
		return 0, 0, fmt.Errorf("/%s: %w", rel, err)
	}
	if err := f.checkAncestry(fd, rel); err != nil {
		return 0, 0, err
	}
	if err := checkEmpty(fd, rel); err != nil {
		return 0, 0, err
	}
	if err := zones.WriteMarker(fd, z); err != nil {
		return 0, 0, fmt.Errorf("mark /%s as a zone: %w", rel, err)
	}
	if n := f.lookupKnown(rel); n != nil {
		n.zone.Store(z)
		n.zoneRoot = true
	}
	return st.Dev, st.Ino, nil
}

// UnmakeZone takes the marker off the root of a zone whose registration failed.
func (f *FS) UnmakeZone(rel string) error {
	fd, err := f.root.Open(rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return zones.RemoveMarker(fd)
}

// maxDepth bounds the walk up from a directory to the backing root.
const maxDepth = 1 << 16

// checkAncestry refuses a directory (open as fd) that is a zone root or lies inside a
// zone: it and each of its ancestors up to the backing root are checked against the
// registry and for a marker.
func (f *FS) checkAncestry(fd int, rel string) error {
	depth := 0
	err := f.walkUp(fd, func(dfd int, st *unix.Stat_t) (bool, error) {
		depth++
		return false, f.notZone(dfd, st, rel, depth == 1)
	})
	if err != nil && !errors.Is(err, zones.ErrIsZone) && !errors.Is(err, zones.ErrInsideZone) {
		return fmt.Errorf("/%s: %w", rel, err)
	}
	return err
}

// walkUp calls visit with the directory open as fd and each of its ancestors below
// the backing root, nearest first, until visit says stop or fails. ".." is never a
// symlink, so the walk follows the directories' real places, whatever their paths.
func (f *FS) walkUp(fd int, visit func(fd int, st *unix.Stat_t) (stop bool, err error)) error {
	cur, owned := fd, false
	defer func() {
		if owned {
			unix.Close(cur)
		}
	}()
	var st unix.Stat_t
	if err := backing.Stat(cur, &st); err != nil {
		return err
	}
	for depth := 0; depth < maxDepth; depth++ {
		if f.root.Is(&st) {
			return nil
		}
		if stop, err := visit(cur, &st); stop || err != nil {
			return err
		}
		up, err := backing.Parent(cur)
		if err != nil {
			return err
		}
		prev := st
		if err := backing.Stat(up, &st); err != nil {
			unix.Close(up)
			return err
		}
		if owned {
			unix.Close(cur)
		}
		cur, owned = up, true
		if st.Dev == prev.Dev && st.Ino == prev.Ino {
			return backing.ErrNotBeneath // reached "/"
		}
	}
	return fmt.Errorf("more than %d levels deep", maxDepth)
}

// notZone refuses a directory that is a zone root: self is the candidate itself, else
// an ancestor.
func (f *FS) notZone(fd int, st *unix.Stat_t, rel string, self bool) error {
	j := f.judgeRoot(fd, st, nil)
	var z *zones.Zone
	switch {
	case j.entry != nil:
		z = j.entry.Zone
	case j.marker != nil:
		z = j.marker
	default:
		return nil
	}
	if self {
		return fmt.Errorf("/%s %w (key %s)", rel, zones.ErrIsZone, z.Key)
	}
	where := "zone " + z.IDString()
	if e := f.zones.ByID(z.ID); e != nil {
		where = "/" + e.Path
	}
	return fmt.Errorf("/%s %w (%s)", rel, zones.ErrInsideZone, where)
}

// checkEmpty refuses a directory (open as fd) that has any entry.
func checkEmpty(fd int, rel string) error {
	dup, err := unix.Dup(fd)
	if err != nil {
		return err
	}
	d := os.NewFile(uintptr(dup), rel)
	defer d.Close()
	names, err := d.Readdirnames(1)
	if len(names) > 0 {
		return fmt.Errorf("/%s %w", rel, zones.ErrNotEmpty)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("/%s: %w", rel, err)
	}
	return nil
}

// lookupKnown returns the node for rel if the kernel knows it.
func (f *FS) lookupKnown(rel string) *node {
	in := f.top.EmbeddedInode()
	for _, c := range splitPath(rel) {
		if in = in.GetChild(c); in == nil {
			return nil
		}
	}
	n, _ := in.Operations().(*node)
	return n
}

func splitPath(rel string) []string {
	var out []string
	for rel != "" {
		var name string
		rel, name = backing.Split(rel)
		out = append([]string{name}, out...)
	}
	return out
}

// ZoneHealth says why the registered zone e is not served ("" if it is): its root is
// not at its path, is another directory, or its marker disagrees.
func (f *FS) ZoneHealth(e zones.Entry) string {
	fd, err := f.root.Open(e.Path, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return fmt.Sprintf("its root /%s cannot be opened: %v", e.Path, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := backing.Stat(fd, &st); err != nil {
		return err.Error()
	}
	if e.Ino != 0 && (st.Dev != e.Dev || st.Ino != e.Ino) {
		return fmt.Sprintf("/%s is not the zone's root directory (inode %d, the keystore has %d)", e.Path, st.Ino, e.Ino)
	}
	return f.judgeRoot(fd, &st, &e).why
}

// Locate opens the root of zone rel as found at mount: it returns its identity and
// whether its marker names zone z.
func (f *FS) Locate(rel string, z *zones.Zone) (dev, ino uint64, marked bool, err error) {
	fd, err := f.root.Open(rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return 0, 0, false, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := backing.Stat(fd, &st); err != nil {
		return 0, 0, false, err
	}
	m, _ := zones.ReadMarker(fd)
	return st.Dev, st.Ino, m != nil && m.ID == z.ID, nil
}

// Described is what Describe finds about a backing object.
type Described struct {
	Stat unix.Stat_t
	// Zone is the registered zone whose tree holds the object, by its real ancestry;
	// nil outside zones.
	Zone *zones.Entry
	// EDEK is the record of a regular file inside a zone.
	EDEK []byte
	// Damaged says why the zone holding the object is not served (see dirZone); a
	// marker the registry does not know makes one too, with Zone then nil.
	Damaged string
}

// Describe reports on the backing object at rel, which must not be or lie inside the
// hidden folder (ENOENT, as through the mount).
func (f *FS) Describe(rel string) (*Described, error) {
	fd, err := f.root.Open(rel, unix.O_PATH, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	d := &Described{}
	if err := backing.Stat(fd, &d.Stat); err != nil {
		return nil, err
	}
	dirfd := fd
	if d.Stat.Mode&unix.S_IFMT != unix.S_IFDIR {
		dir, _ := backing.Split(rel)
		if dirfd, err = f.root.OpenDir(dir); err != nil {
			return nil, err
		}
		defer unix.Close(dirfd)
	}
	err = f.walkUp(dirfd, func(dfd int, st *unix.Stat_t) (bool, error) {
		if f.isHidden(st) {
			return true, unix.ENOENT
		}
		if d.Zone == nil && d.Damaged == "" {
			j := f.judgeRoot(dfd, st, nil)
			d.Zone, d.Damaged = j.entry, j.why
		}
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	if d.Zone != nil && d.Stat.Mode&unix.S_IFMT == unix.S_IFREG {
		d.EDEK, err = zones.ReadEDEK(fd)
	}
	return d, err
}
