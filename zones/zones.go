// Package zones owns what an encryption zone is: the registry of zones by ID and path,
// the rules for creating one (no nesting, no zone inside or above another), and the
// per-file key service that seals a new file's data key under the zone key's newest
// version and opens an existing file's EDEK.
package zones

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/ezfs/ezfs/crypto"
	"github.com/ezfs/ezfs/keystore"
)

// Xattr names kept on backing files; they are invisible through the mount.
const (
	XattrPrefix = "user.ezfs."
	XattrEDEK   = "user.ezfs.edek"
	XattrZone   = "user.ezfs.zone"
)

// Errors of the zone rules; the daemon turns them into one-line CLI messages.
var (
	ErrIsZone     = errors.New("is already an encryption zone")
	ErrInsideZone = errors.New("is inside an encryption zone")
	ErrAboveZone  = errors.New("contains an encryption zone")
	ErrNotEmpty   = errors.New("is not empty")
	ErrNotDir     = errors.New("is not a directory")
)

// Zone is the identity the data path needs: its ID (bound into every EDEK) and key name.
type Zone struct {
	ID  crypto.ZoneID
	Key string
	// Damaged, when set, says why the zone is not served: its files answer EIO and
	// nothing is created in it (its root lost its marker, or the marker and the
	// keystore disagree). Set on the copies the file system holds, never in the
	// registry.
	Damaged string
}

// ErrDamaged is the error of every data access in a damaged zone.
var ErrDamaged = errors.New("encryption zone is damaged")

// IDString is the zone ID as stored in the keystore and shown to users.
func (z *Zone) IDString() string { return hex.EncodeToString(z.ID[:]) }

// ParseID decodes a zone ID.
func ParseID(s string) (crypto.ZoneID, error) {
	var id crypto.ZoneID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("zone id %q: %w", s, crypto.ErrFormat)
	}
	copy(id[:], b)
	return id, nil
}

// Marker is the value of user.ezfs.zone on a zone root: "v1 <zone id> <key name>".
func (z *Zone) Marker() []byte { return []byte("v1 " + z.IDString() + " " + z.Key) }

// ParseMarker decodes a zone root marker.
func ParseMarker(b []byte) (*Zone, error) {
	f := strings.Fields(string(b))
	if len(f) != 3 || f[0] != "v1" {
		return nil, fmt.Errorf("zone marker %q: %w", b, crypto.ErrFormat)
	}
	id, err := ParseID(f[1])
	if err != nil {
		return nil, err
	}
	return &Zone{ID: id, Key: f[2]}, nil
}

// Entry is a registered zone: its identity, its root's device and inode (which are
// authoritative: a name can be swapped, an inode cannot), and its path relative to the
// backing dir ("" is the root), kept for display and for admin arguments; the path
// follows renames made through the mount.
type Entry struct {
	Zone     *Zone
	Path     string
	Dev, Ino uint64
}

// Registry holds the zones of one mount. Safe for concurrent use.
type Registry struct {
	mu      sync.RWMutex
	byID    map[crypto.ZoneID]*Entry // guarded by mu
	byInode map[[2]uint64]*Entry     // guarded by mu; entries with a known inode
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{byID: map[crypto.ZoneID]*Entry{}, byInode: map[[2]uint64]*Entry{}}
}

// Clean normalises a path relative to the backing dir.
func Clean(rel string) string {
	rel = path.Clean("/" + rel)
	return strings.TrimPrefix(rel, "/")
}

func within(child, parent string) bool {
	return parent == "" || child == parent || strings.HasPrefix(child, parent+"/")
}

// Add registers e, replacing an entry of the same zone.
func (r *Registry) Add(e Entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removeLocked(e.Zone.ID)
	e.Path = Clean(e.Path)
	r.byID[e.Zone.ID] = &e
	if e.Ino != 0 {
		r.byInode[[2]uint64{e.Dev, e.Ino}] = &e
	}
}

// Remove forgets zone id.
func (r *Registry) Remove(id crypto.ZoneID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removeLocked(id)
}

func (r *Registry) removeLocked(id crypto.ZoneID) {
	if old := r.byID[id]; old != nil {
		delete(r.byInode, [2]uint64{old.Dev, old.Ino})
		delete(r.byID, id)
	}
}

// ByInode returns the zone whose root is the directory dev/ino, or nil.
func (r *Registry) ByInode(dev, ino uint64) *Entry {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if e := r.byInode[[2]uint64{dev, ino}]; e != nil {
		c := *e
		return &c
	}
	return nil
}

// ByID returns zone id, or nil.
func (r *Registry) ByID(id crypto.ZoneID) *Entry {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if e := r.byID[id]; e != nil {
		c := *e
		return &c
	}
	return nil
}

// Renamed records that the directory at from is now at to: every zone at or below it
// moved with it. It returns the moved entries, with their new paths.
func (r *Registry) Renamed(from, to string) []Entry {
	from, to = Clean(from), Clean(to)
	r.mu.Lock()
	defer r.mu.Unlock()
	var moved []Entry
	for _, e := range r.byID {
		if from != "" && within(e.Path, from) {
			e.Path = Clean(to + strings.TrimPrefix(e.Path, from))
			moved = append(moved, *e)
		}
	}
	return moved
}

// At returns the zone rooted exactly at rel, or nil.
func (r *Registry) At(rel string) *Entry {
	rel = Clean(rel)
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, e := range r.byID {
		if e.Path == rel {
			c := *e
			return &c
		}
	}
	return nil
}

// Containing returns the zone whose subtree holds rel, or nil.
func (r *Registry) Containing(rel string) *Entry {
	rel = Clean(rel)
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, e := range r.byID {
		if within(rel, e.Path) {
			c := *e
			return &c
		}
	}
	return nil
}

// List returns every zone ordered by path.
func (r *Registry) List() []Entry {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Entry, 0, len(r.byID))
	for _, e := range r.byID {
		out = append(out, *e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// CheckNew applies the path rules for a new zone at rel: not a zone already, not inside
// a zone, not above one, by the paths the registry knows. The file system checks the
// real ancestry of the directory, and that it is empty, atomically with marking it.
func (r *Registry) CheckNew(rel string) error {
	rel = Clean(rel)
	for _, e := range r.List() {
		switch p := e.Path; {
		case p == rel:
			return fmt.Errorf("/%s %w (key %s)", rel, ErrIsZone, e.Zone.Key)
		case within(rel, p):
			return fmt.Errorf("/%s %w (/%s)", rel, ErrInsideZone, p)
		case within(p, rel):
			return fmt.Errorf("/%s %w (/%s)", rel, ErrAboveZone, p)
		}
	}
	return nil
}

// Keys seals and opens file data keys with the zone keys of a keyring.
type Keys struct {
	Ring *keystore.Keyring
	// OnLookup, if set, is called for every zone key version a file operation needs
	// (the daemon counts cache hits with it).
	OnLookup func()
}

func (k *Keys) lookup() {
	if k.OnLookup != nil {
		k.OnLookup()
	}
}

// Usable is nil when zone key name may be used (keystore.Store.Usable): the file
// system asks on every data request, so a disabled key stops its zones' open files
// too, whose data keys are in memory.
func (k *Keys) Usable(name string) error { return k.Ring.Store().Usable(name) }

// NewFileKey makes a data key for a new file in zone z, sealed under the newest version
// of the zone's key in the current EDEK format (v2). It returns the DEK (the caller zeroes it), the EDEK record for the
// xattr and the file ID.
func (k *Keys) NewFileKey(ctx context.Context, z *Zone) ([]byte, []byte, crypto.FileID, error) {
	var id crypto.FileID
	version, err := k.Ring.Store().LatestVersion(z.Key)
	if err != nil {
		return nil, nil, id, err
	}
	id, err = crypto.NewFileID()
	if err != nil {
		return nil, nil, id, err
	}
	dek, err := crypto.NewDEK()
	if err != nil {
		return nil, nil, id, err
	}
	var rec []byte
	k.lookup()
	err = k.Ring.WithZoneKey(ctx, z.Key, version, func(key []byte) error {
		e, err := crypto.SealDEK(key, z.ID, z.Key, version, id, dek)
		if err != nil {
			return err
		}
		rec, err = e.MarshalBinary()
		return err
	})
	if err != nil {
		crypto.Zero(dek)
		return nil, nil, id, fmt.Errorf("new file in zone %s: key %s@%d: %w", z.IDString(), z.Key, version, err)
	}
	return dek, rec, id, nil
}

// OpenFileKey opens an EDEK record of a file in zone z, of any format (a v2 record is
// under the zone's key, a v1 record names its own). Tampering, a record from another
// file or zone, or a wrong key is keystore.ErrInvalidCiphertext.
func (k *Keys) OpenFileKey(ctx context.Context, z *Zone, rec []byte) ([]byte, *crypto.EDEK, error) {
	e, err := crypto.ParseEDEK(rec)
	if err != nil {
		return nil, nil, fmt.Errorf("%v: %w", err, keystore.ErrInvalidCiphertext)
	}
	name := e.KeyNameIn(z.Key)
	var dek []byte
	k.lookup()
	err = k.Ring.WithZoneKey(ctx, name, e.KeyVersion, func(key []byte) error {
		var err error
		dek, err = e.Open(key, z.ID, name)
		if errors.Is(err, crypto.ErrAuth) {
			return fmt.Errorf("%v: %w", err, keystore.ErrInvalidCiphertext)
		}
		return err
	})
	return dek, e, err
}

// Rewrap re-seals the data key of EDEK record rec (of any format) under version target
// of the zone's key, in the current format, and checks that the new record opens to the
// same data key. File contents are not involved: the DEK and file ID never change.
func (k *Keys) Rewrap(ctx context.Context, z *Zone, rec []byte, target uint32) ([]byte, error) {
	dek, old, err := k.OpenFileKey(ctx, z, rec)
	if err != nil {
		return nil, err
	}
	defer crypto.Zero(dek)
	var out []byte
	k.lookup()
	err = k.Ring.WithZoneKey(ctx, z.Key, target, func(key []byte) error {
		e, err := crypto.SealDEK(key, z.ID, z.Key, target, old.FileID, dek)
		if err != nil {
			return err
		}
		check, err := e.Open(key, z.ID, z.Key)
		if err != nil {
			return err
		}
		same := bytes.Equal(check, dek)
		crypto.Zero(check)
		if !same {
			return fmt.Errorf("rewrapped EDEK opens to another key: %w", keystore.ErrInvalidCiphertext)
		}
		out, err = e.MarshalBinary()
		return err
	})
	return out, err
}
