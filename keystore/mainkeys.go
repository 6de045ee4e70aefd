package keystore

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/ezfs/ezfs/crypto"
	bolt "go.etcd.io/bbolt"
)

// Main key versions are stored under NAME 0x00 VERSION (big-endian), so one main key's
// versions are adjacent and in order; each name's current version under
// current_main 0x00 NAME in the meta bucket.

func mainKeyID(name string, v uint32) []byte {
	return binary.BigEndian.AppendUint32(append([]byte(name), 0), v)
}

func currentKeyID(name string) []byte { return append(append(bytes.Clone(keyCurrentMain), 0), name...) }

// CheckMainKeyName refuses names that cannot name a main key (the zone key rules).
func CheckMainKeyName(name string) error {
	if err := crypto.CheckKeyName(name); err != nil {
		return fmt.Errorf("main key name: %v: %w", err, ErrBadInput)
	}
	return nil
}

// AddMainKey stores a new version of main key mk.Name (DefaultMain when empty; the
// main key is created with its first version) and makes it that key's current
// version. A zero Version is assigned the next number.
func (s *Store) AddMainKey(mk *MainKey) error {
	if mk.Name == "" {
		mk.Name = DefaultMain
	}
	if err := CheckMainKeyName(mk.Name); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMainKeys)
		if mk.Version == 0 {
			mk.Version = nextMainVersion(b, mk.Name)
		}
		id := mainKeyID(mk.Name, mk.Version)
		if b.Get(id) != nil {
			return fmt.Errorf("main key %s: %w", mk.Ref(), ErrExists)
		}
		if err := putJSON(b, id, mk); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(currentKeyID(mk.Name), u32(mk.Version))
	})
}

// nextMainVersion is one more than the highest stored version of main key name.
func nextMainVersion(b *bolt.Bucket, name string) uint32 {
	prefix := append([]byte(name), 0)
	next := uint32(1)
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+4; k, _ = c.Next() {
		next = binary.BigEndian.Uint32(k[len(prefix):]) + 1
	}
	return next
}

// NextMainVersion is the number the next version of main key name will have.
func (s *Store) NextMainVersion(name string) (uint32, error) {
	var v uint32
	err := s.db.View(func(tx *bolt.Tx) error {
		v = nextMainVersion(tx.Bucket(bucketMainKeys), name)
		return nil
	})
	return v, err
}

// MainKeys lists every version of every main key, by name, oldest version first.
func (s *Store) MainKeys() ([]*MainKey, error) {
	return listJSON[MainKey](s.db, bucketMainKeys)
}

// MainKeyVersions lists the versions of main key name, oldest first; ErrKeyNotFound if
// there is no such main key.
func (s *Store) MainKeyVersions(name string) ([]*MainKey, error) {
	all, err := s.MainKeys()
	if err != nil {
		return nil, err
	}
	var out []*MainKey
	for _, mk := range all {
		if mk.Name == name {
			out = append(out, mk)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("main key %q: %w", name, ErrKeyNotFound)
	}
	return out, nil
}

// MainKey returns main key version ref.
func (s *Store) MainKey(ref MainRef) (*MainKey, error) {
	mk := new(MainKey)
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		mk, err = mainKeyTx(tx, ref)
		return err
	})
	return mk, err
}

func mainKeyTx(tx *bolt.Tx, ref MainRef) (*MainKey, error) {
	mk := new(MainKey)
	ok, err := getJSON(tx.Bucket(bucketMainKeys), mainKeyID(ref.Name, ref.Version), mk)
	if err == nil && !ok {
		err = fmt.Errorf("main key %s: %w", ref, ErrKeyNotFound)
	}
	return mk, err
}

// CurrentMainKey returns the version of main key name ("" for the default) that wraps
// new zone key versions.
func (s *Store) CurrentMainKey(name string) (*MainKey, error) {
	var mk *MainKey
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		mk, err = currentMainTx(tx, name)
		return err
	})
	return mk, err
}

func currentMainTx(tx *bolt.Tx, name string) (*MainKey, error) {
	if name == "" {
		name = DefaultMain
	}
	raw := tx.Bucket(bucketMeta).Get(currentKeyID(name))
	if raw == nil {
		return nil, fmt.Errorf("main key %q: %w", name, ErrKeyNotFound)
	}
	return mainKeyTx(tx, MainRef{name, binary.BigEndian.Uint32(raw)})
}

// RetireMainKey marks main key version ref retired: no longer opened at mount. It
// refuses the current version of its key and one that still wraps a zone key version.
func (s *Store) RetireMainKey(ref MainRef) error {
	cur, err := s.CurrentMainKey(ref.Name)
	if err != nil {
		return err
	}
	if cur.Version == ref.Version {
		return fmt.Errorf("main key %s is its current version: rotate or set another provider first: %w", ref, ErrInUse)
	}
	deps, err := s.Dependents(ref)
	if err != nil {
		return err
	}
	if len(deps) > 0 {
		return fmt.Errorf("main key %s still wraps %s, wrapped under no other main key version: run 'ezfs kms rewrap %s' first (a key that is not active: enable it first; a version no file uses: 'ezfs key retire' then 'ezfs key purge' it): %w",
			ref, strings.Join(deps, ", "), ref.Name, ErrInUse)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		mk, err := mainKeyTx(tx, ref)
		if err != nil {
			return err
		}
		mk.State = StateRetired
		return putJSON(tx.Bucket(bucketMainKeys), mainKeyID(ref.Name, ref.Version), mk)
	})
}

// migrate brings a schema 1 keystore (one unnamed main key) to schema 2: its main key
// versions become versions of DefaultMain, and every zone key and zone key version
// names the main key that wraps it.
func migrate(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if string(meta.Get(keySchema)) != "1" {
		return nil
	}
	mks := tx.Bucket(bucketMainKeys)
	old := map[string][]byte{}
	err := mks.ForEach(func(k, v []byte) error {
		if len(k) == 4 {
			old[string(k)] = bytes.Clone(v)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for k, v := range old {
		mk := new(MainKey)
		if err := json.Unmarshal(v, mk); err != nil {
			return fmt.Errorf("migrate main key record %x: %w", k, err)
		}
		mk.Name = DefaultMain
		if err := mks.Delete([]byte(k)); err != nil {
			return err
		}
		if err := putJSON(mks, mainKeyID(mk.Name, mk.Version), mk); err != nil {
			return err
		}
	}
	if cur := meta.Get(keyCurrentMain); cur != nil {
		if err := meta.Put(currentKeyID(DefaultMain), bytes.Clone(cur)); err != nil {
			return err
		}
		if err := meta.Delete(keyCurrentMain); err != nil {
			return err
		}
	}
	if err := migrateZoneKeys(tx.Bucket(bucketZoneKeys)); err != nil {
		return err
	}
	return meta.Put(keySchema, []byte(Schema))
}

func migrateZoneKeys(b *bolt.Bucket) error {
	updated := map[string]*ZoneKey{}
	err := b.ForEach(func(k, v []byte) error {
		zk := new(ZoneKey)
		if err := json.Unmarshal(v, zk); err != nil {
			return fmt.Errorf("migrate zone key %q: %w", k, err)
		}
		if zk.MainKey == "" {
			zk.MainKey = DefaultMain
		}
		for i := range zk.Versions {
			if zk.Versions[i].MainName == "" {
				zk.Versions[i].MainName = DefaultMain
			}
		}
		updated[string(k)] = zk
		return nil
	})
	if err != nil {
		return err
	}
	for k, zk := range updated {
		if err := putJSON(b, []byte(k), zk); err != nil {
			return err
		}
	}
	return nil
}
