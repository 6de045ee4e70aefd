package keystore

import (
	"bytes"
	"fmt"
	"os"

	"github.com/ezfs/ezfs/backing"
)

// record is one keystore record, as stored.
type record struct{ bucket, key, val []byte }

// readAll reads every record of db at one moment, bucket by bucket, in key order.
func readAll(db backend) ([]record, error) {
	var out []record
	err := db.View(func(tx txn) error {
		out = nil
		for _, b := range buckets {
			err := tx.ForEach(b, nil, func(k, v []byte) error {
				out = append(out, record{b, bytes.Clone(k), bytes.Clone(v)})
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

// writeBoltFile makes f, a new empty file, a bbolt keystore database of recs.
func writeBoltFile(f *os.File, recs []record) error {
	db, err := openBolt(backing.ProcFD(int(f.Fd())), f.Name())
	if err != nil {
		return err
	}
	err = db.Update(func(tx txn) error {
		for _, r := range recs {
			if err := tx.Put(r.bucket, r.key, r.val); err != nil {
				return fmt.Errorf("%s/%q: %w", r.bucket, r.key, err)
			}
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return err
}
