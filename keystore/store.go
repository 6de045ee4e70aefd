package keystore

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ezfs/ezfs/crypto"
	"golang.org/x/sys/unix"
)

// FileName is the keystore database inside its folder.
const FileName = "keystore.db"

var (
	bucketMeta     = []byte("meta")
	bucketMainKeys = []byte("mainkeys")
	bucketZoneKeys = []byte("zonekeys")
	bucketZones    = []byte("zones")
	keyCurrentMain = []byte("current_main") // schema 1: the one main key's current version
	keySchema      = []byte("schema")
)

// Schema is the keystore layout this code writes. Schema 1 (before named main keys)
// is migrated on open: its main key becomes DefaultMain.
const Schema = "2"

// DefaultMain is the main key init makes, and the one zone keys use unless told.
const DefaultMain = "default"

// MainRef names one version of a main key.
type MainRef struct {
	Name    string `json:"name"`
	Version uint32 `json:"version"`
}

func (r MainRef) String() string { return fmt.Sprintf("%s v%d", r.Name, r.Version) }

// Credential says where the secret of a main key version's provider comes from (a PIN,
// a Vault token, a passphrase), never the secret itself. Empty: the mount's own
// (--pin-file, EZFS_EXTERNAL_KEY_PIN, VAULT_TOKEN, the passphrase).
type Credential struct {
	File string `json:"file,omitempty"` // a file the daemon reads
	Env  string `json:"env,omitempty"`  // an environment variable of the mount command
	// Systemd is a systemd credential's name (LoadCredential= of the unit that runs
	// `ezfs mount`): the file of that name in the daemon's $CREDENTIALS_DIRECTORY,
	// which systemd chooses per unit and start.
	Systemd string `json:"systemd,omitempty"`
}

// None reports a credential that names no source: the mount's own secrets serve.
func (c *Credential) None() bool { return c == nil || (c.File == "" && c.Env == "" && c.Systemd == "") }

// Reread reports a source that can be read again while mounted (a file).
func (c *Credential) Reread() bool { return !c.None() && c.Env == "" }

// String describes the source for display, never its value.
func (c *Credential) String() string {
	switch {
	case c == nil:
		return "the mount's"
	case c.File != "":
		return "file " + c.File
	case c.Env != "":
		return "environment variable " + c.Env
	case c.Systemd != "":
		return "systemd credential " + c.Systemd
	}
	return "the mount's"
}

// MainKey is one version of a named main key. Only its public part is used locally.
type MainKey struct {
	Name     string `json:"name"`
	Version  uint32 `json:"version"`
	Provider string `json:"provider"`
	// Settings locate the provider instance in full (pkcs11: module, token, key; vault:
	// address, namespace, mount, key, ca_cert, auth).
	Settings   map[string]string `json:"settings,omitempty"`
	Credential *Credential       `json:"credential,omitempty"`
	// Origin is "detected" for a version enrolled because the provider made it (a
	// Transit rotation done in Vault); empty for one made by ezfs.
	Origin      string    `json:"origin,omitempty"`
	KeyRef      string    `json:"key_ref"`
	Algorithm   string    `json:"algorithm"`
	OAEPHash    string    `json:"oaep_hash"`
	PublicKey   []byte    `json:"public_key"`
	Fingerprint string    `json:"fingerprint"`
	State       string    `json:"state"`
	Created     time.Time `json:"created"`
	// Sealed holds the PKCS#8 private key of a system provider version, encrypted under
	// a key derived from the passphrase.
	Sealed *crypto.Sealed `json:"sealed,omitempty"`
}

// Ref names this version.
func (m *MainKey) Ref() MainRef { return MainRef{m.Name, m.Version} }

// Key states.
const (
	StateActive  = "active"
	StateRetired = "retired"
)

// Public parses the stored public key.
func (m *MainKey) Public() (*rsa.PublicKey, error) {
	k, err := x509.ParsePKIXPublicKey(m.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("main key %s public key: %w", m.Ref(), err)
	}
	pub, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("main key %s: not an RSA key: %w", m.Ref(), ErrBadInput)
	}
	return pub, nil
}

// ZoneKeyVersion is one version of a zone key, wrapped under a main key version.
type ZoneKeyVersion struct {
	Version     uint32    `json:"version"`
	Created     time.Time `json:"created"`
	MainName    string    `json:"main_key"`
	MainVersion uint32    `json:"main_version"`
	Wrapped     []byte    `json:"wrapped"`
	State       string    `json:"state"`
}

// Main is the main key version that wraps kv.
func (kv ZoneKeyVersion) Main() MainRef { return MainRef{kv.MainName, kv.MainVersion} }

// ZoneKey is a named zone key and all its versions, oldest first.
type ZoneKey struct {
	Name string `json:"name"`
	// MainKey wraps the key's new versions (and, after set-main, all of them).
	MainKey  string           `json:"main_key"`
	Created  time.Time        `json:"created"`
	Versions []ZoneKeyVersion `json:"versions"`
	// Lifecycle (keystore/lifecycle.go): State is "" (active, as in records written
	// before states were kept), disabled, deleted or purged.
	State      string     `json:"state,omitempty"`
	Deleted    *time.Time `json:"deleted,omitempty"`
	PurgeAfter *time.Time `json:"purge_after,omitempty"`
	Purged     *time.Time `json:"purged,omitempty"`
	// Policy is its rotation schedule (policy.go); nil for none.
	Policy *Policy `json:"policy,omitempty"`
}

// Latest returns the newest version.
func (z *ZoneKey) Latest() ZoneKeyVersion { return z.Versions[len(z.Versions)-1] }

// Version returns version v.
func (z *ZoneKey) Version(v uint32) (ZoneKeyVersion, bool) {
	for _, kv := range z.Versions {
		if kv.Version == v {
			return kv, true
		}
	}
	return ZoneKeyVersion{}, false
}

// Zone is an encryption zone: a directory, relative to the backing dir, and its key.
type Zone struct {
	ID      string    `json:"id"`
	Path    string    `json:"path"`
	Key     string    `json:"key"`
	Created time.Time `json:"created"`
	// Dev and Ino are the zone root's device and inode: with the ID, what identifies
	// the zone on the backing disk (the path is kept for display). Zero in records
	// written before they were kept; the daemon fills them in at mount.
	Dev uint64 `json:"dev,omitempty"`
	Ino uint64 `json:"ino,omitempty"`
}

// Store is an open keystore. Its methods are safe for concurrent use; the backend
// serialises writers.
type Store struct {
	db  backend
	dir string
	// folder is dir's identity when the store was opened: a backup is never written
	// into it (Backup).
	folder Place

	// caches holds each zone key's newest version (every file create needs it) and
	// lifecycle state (every data request, see Usable): cache.go. The Store's own
	// changes update it; with a bbolt file this process is the only writer, with etcd
	// Watch drops it on every change made by anyone.
	caches atomic.Pointer[keyCache]
	// local holds the job claims of a bbolt keystore by zone ID (lease.go).
	local sync.Map
}

// Dir is the keystore folder, or its etcd location.
func (s *Store) Dir() string { return s.dir }

// Exists reports whether dir (a folder or an etcd location, location.go) holds a
// keystore.
func Exists(dir string) bool {
	if IsEtcd(dir) {
		return etcdExists(dir)
	}
	_, err := os.Stat(filepath.Join(dir, FileName))
	return err == nil
}

// Create makes a new keystore in dir (a folder or an etcd location); it refuses to
// touch an existing one.
func Create(dir string) (*Store, error) {
	if IsEtcd(dir) {
		return openEtcdStore(dir, true)
	}
	if Exists(dir) {
		return nil, fmt.Errorf("keystore %s: %w", dir, ErrExists)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create keystore folder: %w", err)
	}
	s, err := open(dir)
	if err != nil {
		return nil, err
	}
	err = s.db.Update(func(tx txn) error {
		return tx.Put(bucketMeta, keySchema, []byte(Schema))
	})
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("initialise keystore: %w", err)
	}
	return s, nil
}

// Open opens an existing keystore, in a folder or at an etcd location. A second
// process opening a folder's gets ErrLocked within a second; an etcd keystore is
// shared.
func Open(dir string) (*Store, error) {
	if IsEtcd(dir) {
		return openEtcdStore(dir, false)
	}
	if !Exists(dir) {
		return nil, fmt.Errorf("%s (run 'ezfs init' first): %w", dir, ErrNoStore)
	}
	return open(dir)
}

func open(dir string) (*Store, error) {
	db, err := openBolt(filepath.Join(dir, FileName), dir)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil { // the folder bbolt just opened the file in
		db.Close()
		return nil, fmt.Errorf("open keystore %s: %w", dir, err)
	}
	return storeOn(db, dir, Place{Name: dir, Dev: st.Dev, Ino: st.Ino}), nil
}

func storeOn(db backend, dir string, folder Place) *Store {
	s := &Store{db: db, dir: dir, folder: folder}
	s.dropCaches()
	return s
}

// Close releases the file lock (bbolt) or the connections (etcd).
func (s *Store) Close() error { return s.db.Close() }

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// CreateZoneKey creates key name with version 1, wrapped under the current version of
// main key main ("" for the default).
func (s *Store) CreateZoneKey(name, main string) (*ZoneKey, error) {
	if err := crypto.CheckKeyName(name); err != nil {
		return nil, fmt.Errorf("%v: %w", err, ErrBadInput)
	}
	if main == "" {
		main = DefaultMain
	}
	return s.addZoneKeyVersion(name, main, nil)
}

// RollZoneKey adds version N+1 of name, wrapped under the current version of the zone
// key's main key; new files use it at once.
func (s *Store) RollZoneKey(name string) (*ZoneKey, error) {
	return s.addZoneKeyVersion(name, "", nil)
}

// RollZoneKeyIf rolls name as RollZoneKey does if due, asked of the key as the roll's
// transaction reads it, says so; otherwise it fails with ErrNotDue. Several daemons on
// one keystore run the same rotation policies: the first roll makes the key not due
// for the others' transactions, which etcd runs again on the new record.
func (s *Store) RollZoneKeyIf(name string, due func(*ZoneKey) bool) (*ZoneKey, error) {
	return s.addZoneKeyVersion(name, "", due)
}

// addZoneKeyVersion creates name under main key main, or, with main "", rolls it (if
// due, when it is not nil, holds).
func (s *Store) addZoneKeyVersion(name, main string, due func(*ZoneKey) bool) (*ZoneKey, error) {
	zk, c := new(ZoneKey), s.cache()
	err := s.db.Update(func(tx txn) error {
		*zk = ZoneKey{}
		found, err := getJSON(tx, bucketZoneKeys, []byte(name), zk)
		if err != nil {
			return err
		}
		switch {
		case main != "" && found && (zk.KeyState() == StateDeleted || zk.KeyState() == StatePurged):
			return fmt.Errorf("key %q is %s: %w", name, zk.KeyState(), ErrReserved)
		case main != "" && found:
			return fmt.Errorf("key %q: %w", name, ErrExists)
		case main == "" && !found:
			return fmt.Errorf("key %q: %w", name, ErrKeyNotFound)
		case found && zk.KeyState() != StateActive:
			return fmt.Errorf("key %q is %s: %w", name, zk.KeyState(), ErrKeyState)
		case found && due != nil && !due(zk):
			return fmt.Errorf("key %q: %w", name, ErrNotDue)
		}
		now := time.Now().UTC()
		next := uint32(1)
		if found {
			next = zk.Latest().Version + 1
		} else {
			*zk = ZoneKey{Name: name, Created: now, MainKey: main}
		}
		mk, err := currentMainTx(tx, zk.MainKey)
		if err != nil {
			return err
		}
		wrapped, err := newWrappedZoneKey(mk, name, next)
		if err != nil {
			return err
		}
		zk.Versions = append(zk.Versions, ZoneKeyVersion{
			Version: next, Created: now, MainName: mk.Name, MainVersion: mk.Version, Wrapped: wrapped, State: StateActive,
		})
		return putJSON(tx, bucketZoneKeys, []byte(name), zk)
	})
	if err != nil {
		return nil, err
	}
	c.setLatest(name, zk.Latest().Version)
	return zk, nil
}

// newWrappedZoneKey makes a random zone key name@version and wraps it under mk.
func newWrappedZoneKey(mk *MainKey, name string, version uint32) ([]byte, error) {
	pub, err := mk.Public()
	if err != nil {
		return nil, err
	}
	h, err := HashByName(mk.OAEPHash)
	if err != nil {
		return nil, err
	}
	key, err := crypto.NewZoneKey()
	if err != nil {
		return nil, err
	}
	defer crypto.Zero(key)
	return crypto.WrapZoneKey(pub, h, name, version, key)
}

// LatestVersion is the newest version of zone key name.
func (s *Store) LatestVersion(name string) (uint32, error) {
	c := s.cache()
	if v, ok := c.getLatest(name); ok {
		return v, nil
	}
	zk, err := s.ZoneKey(name)
	if err != nil {
		return 0, err
	}
	c.setLatest(name, zk.Latest().Version)
	return zk.Latest().Version, nil
}

// ZoneKey returns key name with all its versions.
func (s *Store) ZoneKey(name string) (*ZoneKey, error) {
	var zk *ZoneKey
	err := s.db.View(func(tx txn) (err error) {
		zk, err = zoneKeyTx(tx, name)
		return err
	})
	return zk, err
}

// ZoneKeys lists every zone key by name.
func (s *Store) ZoneKeys() ([]*ZoneKey, error) {
	return listJSON[ZoneKey](s.db, bucketZoneKeys)
}

// PutZone records a zone (new or moved).
func (s *Store) PutZone(z *Zone) error {
	return s.db.Update(func(tx txn) error {
		return putJSON(tx, bucketZones, []byte(z.ID), z)
	})
}

// DeleteZone forgets a zone.
func (s *Store) DeleteZone(id string) error {
	return s.db.Update(func(tx txn) error {
		return tx.Delete(bucketZones, []byte(id))
	})
}

// Zones lists every zone, ordered by path.
func (s *Store) Zones() ([]*Zone, error) {
	out, err := listJSON[Zone](s.db, bucketZones)
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, err
}

// SetZoneKeyWrap replaces the wrapped material of name@version, which must still be
// wrapped by main key version from, by wrapped under main key version to.
func (s *Store) SetZoneKeyWrap(name string, version uint32, from, to MainRef, wrapped []byte) error {
	return s.updateZoneKey(name, func(zk *ZoneKey) error {
		for i := range zk.Versions {
			kv := &zk.Versions[i]
			if kv.Version != version {
				continue
			}
			if kv.Main() != from {
				return fmt.Errorf("%s@%d is wrapped by main key %s now, not %s: %w", name, version, kv.Main(), from, ErrConflict)
			}
			kv.MainName, kv.MainVersion, kv.Wrapped = to.Name, to.Version, wrapped
			return nil
		}
		return fmt.Errorf("key %s@%d: %w", name, version, ErrKeyNotFound)
	})
}

// SetZoneKeyMain makes main the main key that wraps name's new versions.
func (s *Store) SetZoneKeyMain(name, main string) error {
	return s.updateZoneKey(name, func(zk *ZoneKey) error {
		zk.MainKey = main
		return nil
	})
}

// updateZoneKey changes zone key name with fn in one transaction.
func (s *Store) updateZoneKey(name string, fn func(zk *ZoneKey) error) error {
	return s.updateZoneKeyTx(name, func(_ txn, zk *ZoneKey) error { return fn(zk) })
}

// updateZoneKeyTx is updateZoneKey for a change that reads other records of the
// transaction too.
func (s *Store) updateZoneKeyTx(name string, fn func(tx txn, zk *ZoneKey) error) error {
	return s.db.Update(func(tx txn) error {
		zk, err := zoneKeyTx(tx, name)
		if err != nil {
			return err
		}
		if err := fn(tx, zk); err != nil {
			return err
		}
		return putJSON(tx, bucketZoneKeys, []byte(name), zk)
	})
}

// zoneKeyTx reads zone key name in tx.
func zoneKeyTx(tx txn, name string) (*ZoneKey, error) {
	zk := new(ZoneKey)
	found, err := getJSON(tx, bucketZoneKeys, []byte(name), zk)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("key %q: %w", name, ErrKeyNotFound)
	}
	return zk, nil
}
