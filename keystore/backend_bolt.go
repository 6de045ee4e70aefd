package keystore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// boltBackend is a keystore in one bbolt file: bbolt serialises writers, and its file
// lock keeps a second process out (ErrLocked).
type boltBackend struct{ db *bolt.DB }

// openBolt opens (or makes) the database at path, with every bucket, and migrates an
// older schema. name is the keystore's location for messages.
func openBolt(path, name string) (*boltBackend, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%s: %w (is it mounted?)", name, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open keystore %s: %w", name, err)
	}
	b := &boltBackend{db}
	// Buckets added by later versions appear in older keystores on first open.
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range buckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return migrate(boltTxn{tx})
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open keystore %s: %w", name, err)
	}
	return b, nil
}

func (b *boltBackend) View(fn func(txn) error) error {
	return b.db.View(func(tx *bolt.Tx) error { return fn(boltTxn{tx}) })
}

func (b *boltBackend) Update(fn func(txn) error) error {
	return b.db.Update(func(tx *bolt.Tx) error { return fn(boltTxn{tx}) })
}

// Backup is bbolt's copy of a read transaction: writers go on meanwhile.
func (b *boltBackend) Backup(f *os.File) (int64, error) {
	var n int64
	err := b.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(f)
		return err
	})
	return n, err
}

func (b *boltBackend) Close() error { return b.db.Close() }

type boltTxn struct{ tx *bolt.Tx }

// bucket is the named bucket; one the database lacks (a backup being checked) is an
// error, not a panic.
func (t boltTxn) bucket(name []byte) (*bolt.Bucket, error) {
	b := t.tx.Bucket(name)
	if b == nil {
		return nil, fmt.Errorf("keystore has no %s records", name)
	}
	return b, nil
}

func (t boltTxn) Get(bucket, key []byte) ([]byte, error) {
	b, err := t.bucket(bucket)
	if err != nil {
		return nil, err
	}
	return b.Get(key), nil
}

func (t boltTxn) Put(bucket, key, val []byte) error {
	b, err := t.bucket(bucket)
	if err != nil {
		return err
	}
	return b.Put(key, val)
}

func (t boltTxn) Delete(bucket, key []byte) error {
	b, err := t.bucket(bucket)
	if err != nil {
		return err
	}
	return b.Delete(key)
}

func (t boltTxn) ForEach(bucket, prefix []byte, fn func(k, v []byte) error) error {
	b, err := t.bucket(bucket)
	if err != nil {
		return err
	}
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}
