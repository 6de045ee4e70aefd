package keystore

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/ezfs/ezfs/crypto"
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
	assign := mk.Version == 0
	return s.db.Update(func(tx txn) error {
		if assign { // again on each try: a concurrent writer may have taken the number
			v, err := nextMainVersion(tx, mk.Name)
			if err != nil {
				return err
			}
			mk.Version = v
		}
		id := mainKeyID(mk.Name, mk.Version)
		if old, err := tx.Get(bucketMainKeys, id); err != nil || old != nil {
			return errors.Join(err, existsErr(old, mk.Ref()))
		}
		if err := putJSON(tx, bucketMainKeys, id, mk); err != nil {
			return err
		}
		return tx.Put(bucketMeta, currentKeyID(mk.Name), u32(mk.Version))
	})
}

// existsErr is ErrExists for main key version ref when a record old is there.
func existsErr(old []byte, ref MainRef) error {
	if old == nil {
		return nil
	}
	return fmt.Errorf("main key %s: %w", ref, ErrExists)
}

// nextMainVersion is one more than the highest stored version of main key name.
func nextMainVersion(tx txn, name string) (uint32, error) {
	prefix := append([]byte(name), 0)
	next := uint32(1)
	err := tx.ForEach(bucketMainKeys, prefix, func(k, _ []byte) error {
		if len(k) == len(prefix)+4 {
			next = binary.BigEndian.Uint32(k[len(prefix):]) + 1
		}
		return nil
	})
	return next, err
}

// NextMainVersion is the number the next version of main key name will have.
func (s *Store) NextMainVersion(name string) (uint32, error) {
	var v uint32
	err := s.db.View(func(tx txn) (err error) {
		v, err = nextMainVersion(tx, name)
		return err
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
	err := s.db.View(func(tx txn) error {
		var err error
		mk, err = mainKeyTx(tx, ref)
		return err
	})
	return mk, err
}

func mainKeyTx(tx txn, ref MainRef) (*MainKey, error) {
	mk := new(MainKey)
	ok, err := getJSON(tx, bucketMainKeys, mainKeyID(ref.Name, ref.Version), mk)
	if err == nil && !ok {
		err = fmt.Errorf("main key %s: %w", ref, ErrKeyNotFound)
	}
	return mk, err
}

// CurrentMainKey returns the version of main key name ("" for the default) that wraps
// new zone key versions.
func (s *Store) CurrentMainKey(name string) (*MainKey, error) {
	var mk *MainKey
	err := s.db.View(func(tx txn) error {
		var err error
		mk, err = currentMainTx(tx, name)
		return err
	})
	return mk, err
}

func currentMainTx(tx txn, name string) (*MainKey, error) {
	if name == "" {
		name = DefaultMain
	}
	raw, err := tx.Get(bucketMeta, currentKeyID(name))
	if err != nil {
		return nil, err
	}
	if raw == nil {
		return nil, fmt.Errorf("main key %q: %w", name, ErrKeyNotFound)
	}
	return mainKeyTx(tx, MainRef{name, binary.BigEndian.Uint32(raw)})
}

// RetireMainKey marks main key version ref retired: no longer opened at mount. It
// refuses the current version of its key and one that still wraps a zone key version.
func (s *Store) RetireMainKey(ref MainRef) error {
	// The checks and the change are one transaction: another host's rotation or
	// rewrap cannot come between them.
	return s.db.Update(func(tx txn) error {
		cur, err := currentMainTx(tx, ref.Name)
		if err != nil {
			return err
		}
		if cur.Version == ref.Version {
			return fmt.Errorf("main key %s is its current version: rotate or set another provider first: %w", ref, ErrInUse)
		}
		deps, err := dependentsTx(tx, ref)
		if err != nil {
			return err
		}
		if len(deps) > 0 {
			return fmt.Errorf("main key %s still wraps %s, wrapped under no other main key version: run 'ezfs kms rewrap %s' first (a key that is not active: enable it first; a version no file uses: 'ezfs key retire' then 'ezfs key purge' it): %w",
				ref, strings.Join(deps, ", "), ref.Name, ErrInUse)
		}
		mk, err := mainKeyTx(tx, ref)
		if err != nil {
			return err
		}
		mk.State = StateRetired
		return putJSON(tx, bucketMainKeys, mainKeyID(ref.Name, ref.Version), mk)
	})
}

// migrate brings a schema 1 keystore (one unnamed main key) to schema 2: its main key
// versions become versions of DefaultMain, and every zone key and zone key version
// names the main key that wraps it.
func migrate(tx txn) error {
	schema, err := tx.Get(bucketMeta, keySchema)
	if err != nil || string(schema) != "1" {
		return err
	}
	old := map[string][]byte{}
	err = tx.ForEach(bucketMainKeys, nil, func(k, v []byte) error {
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
		if err := tx.Delete(bucketMainKeys, []byte(k)); err != nil {
			return err
		}
		if err := putJSON(tx, bucketMainKeys, mainKeyID(mk.Name, mk.Version), mk); err != nil {
			return err
		}
	}
	if err := migrateCurrentMain(tx); err != nil {
		return err
	}
	if err := migrateZoneKeys(tx); err != nil {
		return err
	}
	return tx.Put(bucketMeta, keySchema, []byte(Schema))
}

// migrateCurrentMain moves schema 1's current main key version to DefaultMain's.
func migrateCurrentMain(tx txn) error {
	cur, err := tx.Get(bucketMeta, keyCurrentMain)
	if err != nil || cur == nil {
		return err
	}
	if err := tx.Put(bucketMeta, currentKeyID(DefaultMain), bytes.Clone(cur)); err != nil {
		return err
	}
	return tx.Delete(bucketMeta, keyCurrentMain)
}

func migrateZoneKeys(tx txn) error {
	updated := map[string]*ZoneKey{}
	err := tx.ForEach(bucketZoneKeys, nil, func(k, v []byte) error {
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
		if err := putJSON(tx, bucketZoneKeys, []byte(k), zk); err != nil {
			return err
		}
	}
	return nil
}
