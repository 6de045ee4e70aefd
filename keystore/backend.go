package keystore

import (
	"encoding/json"
	"fmt"
	"os"
)

// backend is where a keystore's records live: buckets of key → value records, the
// values JSON (or a big-endian number, a schema string). Two backends: a bbolt file
// (backend_bolt.go, one host) and an etcd prefix (backend_etcd.go, many hosts). Every
// change is one Update: all of it or nothing, serialised with every other writer's.
type backend interface {
	// View runs fn on a consistent snapshot of every record.
	View(fn func(txn) error) error
	// Update runs fn in one serialisable transaction, committed when fn returns nil.
	// It may run fn more than once (etcd retries a transaction a concurrent writer
	// invalidated): fn must not have effects outside the transaction.
	Update(fn func(txn) error) error
	// Backup writes every record, as of one moment, to f as a bbolt database file (the
	// format Restore reads) and returns its size.
	Backup(f *os.File) (int64, error)
	Close() error
}

// txn reads and writes records inside View or Update (Put and Delete only in Update).
// A value returned by Get or passed to ForEach's fn is valid only until the
// transaction ends. Reads see the transaction's own writes.
type txn interface {
	// Get returns the value of key in bucket, nil if there is none.
	Get(bucket, key []byte) ([]byte, error)
	Put(bucket, key, val []byte) error
	Delete(bucket, key []byte) error
	// ForEach calls fn for every record of bucket whose key starts with prefix (nil:
	// all), in key order.
	ForEach(bucket, prefix []byte, fn func(k, v []byte) error) error
}

// buckets are every bucket a keystore has: the one list the backends create, a
// backup holds and a migration copies.
var buckets = [][]byte{bucketMeta, bucketMainKeys, bucketZoneKeys, bucketZones, bucketJobs}

func getJSON(tx txn, bucket, key []byte, v any) (bool, error) {
	raw, err := tx.Get(bucket, key)
	if err != nil || raw == nil {
		return false, err
	}
	return true, json.Unmarshal(raw, v)
}

// listJSON decodes every value of a bucket, in key order.
func listJSON[T any](db backend, bucket []byte) ([]*T, error) {
	var out []*T
	err := db.View(func(tx txn) error {
		out = nil
		return tx.ForEach(bucket, nil, func(k, v []byte) error {
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

func putJSON(tx txn, bucket, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Put(bucket, key, raw)
}
