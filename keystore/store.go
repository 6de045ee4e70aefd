package keystore

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/ezfs/ezfs/crypto"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// FileName is the keystore database inside its folder.
const FileName = "keystore.db"

var (
	bucketMeta     = []byte("meta")
	bucketMainKeys = []byte("mainkeys")
	bucketZoneKeys = []byte("zonekeys")
	bucketZones    = []byte("zones")
	keyCurrentMain = []byte("current_main")
	keySchema      = []byte("schema")
)

// MainKey is one version of the main key. Only its public part is used locally.
type MainKey struct {
	Version     uint32            `json:"version"`
	Provider    string            `json:"provider"`
	Settings    map[string]string `json:"settings,omitempty"`
	KeyRef      string            `json:"key_ref"`
	Algorithm   string            `json:"algorithm"`
	OAEPHash    string            `json:"oaep_hash"`
	PublicKey   []byte            `json:"public_key"`
	Fingerprint string            `json:"fingerprint"`
	State       string            `json:"state"`
	Created     time.Time         `json:"created"`
	// Sealed holds the PKCS#8 private key of a system provider version, encrypted under
	// a key derived from the passphrase.
	Sealed *crypto.Sealed `json:"sealed,omitempty"`
}

// Key states.
const (
	StateActive  = "active"
	StateRetired = "retired"
)

// Public parses the stored public key.
func (m *MainKey) Public() (*rsa.PublicKey, error) {
	k, err := x509.ParsePKIXPublicKey(m.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("main key v%d public key: %w", m.Version, err)
	}
	pub, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("main key v%d: not an RSA key", m.Version)
	}
	return pub, nil
}

// ZoneKeyVersion is one version of a zone key, wrapped under a main key version.
type ZoneKeyVersion struct {
	Version     uint32    `json:"version"`
	Created     time.Time `json:"created"`
	MainVersion uint32    `json:"main_version"`
	Wrapped     []byte    `json:"wrapped"`
	State       string    `json:"state"`
}

// ZoneKey is a named zone key and all its versions, oldest first.
type ZoneKey struct {
	Name     string           `json:"name"`
	Created  time.Time        `json:"created"`
	Versions []ZoneKeyVersion `json:"versions"`
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

// Store is an open keystore. Its methods are safe for concurrent use; bbolt serialises
// writers.
type Store struct {
	db  *bolt.DB
	dir string

	// latest caches the newest version of each zone key: every file create needs it.
	// The daemon is the keystore's only writer, so the cache follows every roll.
	latestMu sync.Mutex
	latest   map[string]uint32 // guarded by latestMu
}

// Dir is the keystore folder.
func (s *Store) Dir() string { return s.dir }

// Exists reports whether dir holds a keystore.
func Exists(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, FileName))
	return err == nil
}

// Create makes a new keystore in dir; it refuses to touch an existing one.
func Create(dir string) (*Store, error) {
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
	err = s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySchema, []byte("1"))
	})
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("initialise keystore: %w", err)
	}
	return s, nil
}

// Open opens an existing keystore. A second process gets ErrLocked within a second.
func Open(dir string) (*Store, error) {
	if !Exists(dir) {
		return nil, fmt.Errorf("%s (run 'ezfs init' first): %w", dir, ErrNoStore)
	}
	return open(dir)
}

func open(dir string) (*Store, error) {
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, &bolt.Options{Timeout: time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%s: %w (is it mounted?)", dir, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open keystore %s: %w", dir, err)
	}
	// Buckets added by later versions appear in older keystores on first open.
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketMainKeys, bucketZoneKeys, bucketZones, bucketJobs} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open keystore %s: %w", dir, err)
	}
	return &Store{db: db, dir: dir, latest: map[string]uint32{}}, nil
}

// Close releases the file lock.
func (s *Store) Close() error { return s.db.Close() }

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func getJSON(b *bolt.Bucket, key []byte, v any) (bool, error) {
	raw := b.Get(key)
	if raw == nil {
		return false, nil
	}
	return true, json.Unmarshal(raw, v)
}

// listJSON decodes every value of a bucket, in key order.
func listJSON[T any](db *bolt.DB, bucket []byte) ([]*T, error) {
	var out []*T
	err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			x := new(T)
			if err := json.Unmarshal(v, x); err != nil {
				return fmt.Errorf("keystore record %q: %w", k, err)
			}
			out = append(out, x)
			return nil
		})
	})
	return out, err
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, raw)
}

// AddMainKey stores a new main key version and makes it current. A zero Version is
// assigned the next number.
func (s *Store) AddMainKey(mk *MainKey) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMainKeys)
		if mk.Version == 0 {
			mk.Version = nextVersion(b)
		}
		if b.Get(u32(mk.Version)) != nil {
			return fmt.Errorf("main key v%d: %w", mk.Version, ErrExists)
		}
		if err := putJSON(b, u32(mk.Version), mk); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keyCurrentMain, u32(mk.Version))
	})
}

// nextVersion is one more than the highest stored version (keys are big-endian).
func nextVersion(b *bolt.Bucket) uint32 {
	k, _ := b.Cursor().Last()
	if k == nil {
		return 1
	}
	return binary.BigEndian.Uint32(k) + 1
}

// NextMainVersion is the version number the next main key version will have.
func (s *Store) NextMainVersion() (uint32, error) {
	var v uint32
	err := s.db.View(func(tx *bolt.Tx) error {
		v = nextVersion(tx.Bucket(bucketMainKeys))
		return nil
	})
	return v, err
}

// MainKeys lists every main key version, oldest first.
func (s *Store) MainKeys() ([]*MainKey, error) {
	return listJSON[MainKey](s.db, bucketMainKeys)
}

// MainKey returns version v.
func (s *Store) MainKey(v uint32) (*MainKey, error) {
	mk := new(MainKey)
	err := s.db.View(func(tx *bolt.Tx) error {
		ok, err := getJSON(tx.Bucket(bucketMainKeys), u32(v), mk)
		if err == nil && !ok {
			err = fmt.Errorf("main key v%d: %w", v, ErrKeyNotFound)
		}
		return err
	})
	return mk, err
}

// CurrentMainKey returns the version that wraps new zone key versions.
func (s *Store) CurrentMainKey() (*MainKey, error) {
	var v uint32
	err := s.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketMeta).Get(keyCurrentMain)
		if raw == nil {
			return fmt.Errorf("current main key: %w", ErrKeyNotFound)
		}
		v = binary.BigEndian.Uint32(raw)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s.MainKey(v)
}

// CreateZoneKey creates key name with version 1, wrapped under the current main key.
func (s *Store) CreateZoneKey(name string) (*ZoneKey, error) {
	if err := crypto.CheckKeyName(name); err != nil {
		return nil, fmt.Errorf("%v: %w", err, ErrBadInput)
	}
	return s.addZoneKeyVersion(name, true)
}

// RollZoneKey adds version N+1 of name; new files use it at once.
func (s *Store) RollZoneKey(name string) (*ZoneKey, error) {
	return s.addZoneKeyVersion(name, false)
}

func (s *Store) addZoneKeyVersion(name string, create bool) (*ZoneKey, error) {
	mk, err := s.CurrentMainKey()
	if err != nil {
		return nil, err
	}
	pub, err := mk.Public()
	if err != nil {
		return nil, err
	}
	h, err := HashByName(mk.OAEPHash)
	if err != nil {
		return nil, err
	}
	zk := new(ZoneKey)
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketZoneKeys)
		found, err := getJSON(b, []byte(name), zk)
		if err != nil {
			return err
		}
		switch {
		case create && found:
			return fmt.Errorf("key %q: %w", name, ErrExists)
		case !create && !found:
			return fmt.Errorf("key %q: %w", name, ErrKeyNotFound)
		}
		now := time.Now().UTC()
		next := uint32(1)
		if found {
			next = zk.Latest().Version + 1
		} else {
			*zk = ZoneKey{Name: name, Created: now}
		}
		key, err := crypto.NewZoneKey()
		if err != nil {
			return err
		}
		defer crypto.Zero(key)
		wrapped, err := crypto.WrapZoneKey(pub, h, name, next, key)
		if err != nil {
			return err
		}
		zk.Versions = append(zk.Versions, ZoneKeyVersion{
			Version: next, Created: now, MainVersion: mk.Version, Wrapped: wrapped, State: StateActive,
		})
		return putJSON(b, []byte(name), zk)
	})
	if err != nil {
		return nil, err
	}
	s.latestMu.Lock()
	s.latest[name] = zk.Latest().Version
	s.latestMu.Unlock()
	return zk, nil
}

// LatestVersion is the newest version of zone key name.
func (s *Store) LatestVersion(name string) (uint32, error) {
	s.latestMu.Lock()
	v, ok := s.latest[name]
	s.latestMu.Unlock()
	if ok {
		return v, nil
	}
	zk, err := s.ZoneKey(name)
	if err != nil {
		return 0, err
	}
	s.latestMu.Lock()
	s.latest[name] = zk.Latest().Version
	s.latestMu.Unlock()
	return zk.Latest().Version, nil
}

// ZoneKey returns key name with all its versions.
func (s *Store) ZoneKey(name string) (*ZoneKey, error) {
	zk := new(ZoneKey)
	err := s.db.View(func(tx *bolt.Tx) error {
		ok, err := getJSON(tx.Bucket(bucketZoneKeys), []byte(name), zk)
		if err == nil && !ok {
			err = fmt.Errorf("key %q: %w", name, ErrKeyNotFound)
		}
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
	return s.db.Update(func(tx *bolt.Tx) error {
		return putJSON(tx.Bucket(bucketZones), []byte(z.ID), z)
	})
}

// DeleteZone forgets a zone.
func (s *Store) DeleteZone(id string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketZones).Delete([]byte(id))
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
func (s *Store) SetZoneKeyWrap(name string, version, from, to uint32, wrapped []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketZoneKeys)
		zk := new(ZoneKey)
		found, err := getJSON(b, []byte(name), zk)
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("key %q: %w", name, ErrKeyNotFound)
		}
		for i := range zk.Versions {
			if zk.Versions[i].Version != version {
				continue
			}
			if zk.Versions[i].MainVersion != from {
				return fmt.Errorf("%s@%d is wrapped by main key v%d now, not v%d", name, version, zk.Versions[i].MainVersion, from)
			}
			zk.Versions[i].MainVersion, zk.Versions[i].Wrapped = to, wrapped
			return putJSON(b, []byte(name), zk)
		}
		return fmt.Errorf("key %s@%d: %w", name, version, ErrKeyNotFound)
	})
}

// RetireMainKey marks main key version v retired: no longer unlocked at mount. It
// refuses the current version and one that still wraps a zone key version.
func (s *Store) RetireMainKey(v uint32) error {
	cur, err := s.CurrentMainKey()
	if err != nil {
		return err
	}
	if cur.Version == v {
		return fmt.Errorf("main key v%d is the current version: rotate or set another provider first", v)
	}
	zks, err := s.ZoneKeys()
	if err != nil {
		return err
	}
	for _, zk := range zks {
		for _, kv := range zk.Versions {
			if kv.MainVersion == v {
				return fmt.Errorf("main key v%d still wraps %s@%d: run 'ezfs kms rewrap' first", v, zk.Name, kv.Version)
			}
		}
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMainKeys)
		mk := new(MainKey)
		found, err := getJSON(b, u32(v), mk)
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("main key v%d: %w", v, ErrKeyNotFound)
		}
		mk.State = StateRetired
		return putJSON(b, u32(v), mk)
	})
}
