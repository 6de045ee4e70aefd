package keystore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Migrated is what a migration copied: records by bucket.
type Migrated struct {
	From    string         `json:"from"`
	To      string         `json:"to"`
	Records map[string]int `json:"records"`
	Total   int            `json:"total"`
}

// Migrate copies every record of the keystore at from into the keystore location to
// (a folder or an etcd location, location.go), which must hold no record (ErrExists),
// then reads every record back from to and compares it byte for byte with from's. A
// failed copy leaves to as empty as it was. Nothing may use either keystore meanwhile:
// a folder's lock keeps its daemon out; an etcd keystore has no lock (unmount first).
// The audit logs of both record it, once from is open.
func Migrate(from, to string) (*Migrated, error) {
	m := &Migrated{From: from, To: to, Records: map[string]int{}}
	src, err := Open(from)
	if err != nil {
		return m, err
	}
	err = migrateRecords(src, m)
	src.Close()
	locs := []string{from}
	if LogDir(to) != LogDir(from) {
		locs = append(locs, to)
	}
	for _, loc := range locs {
		a, aerr := OpenAudit(loc)
		if aerr != nil {
			return m, errors.Join(err, aerr)
		}
		a.Action("keystore.migrate", map[string]any{"from": from, "to": to, "records": m.Total}, err)
		err = errors.Join(err, a.Close())
	}
	return m, err
}

// migrateRecords copies the records of src into m.To and counts them in m.
func migrateRecords(src *Store, m *Migrated) error {
	from, to := m.From, m.To
	recs, err := readAll(src.db)
	if err != nil {
		return fmt.Errorf("read keystore %s: %w", from, err)
	}
	if err := fillEmpty(to, recs); err != nil {
		return fmt.Errorf("migrate keystore %s to %s: %w", from, to, err)
	}
	for _, r := range recs {
		m.Records[string(r.bucket)]++
	}
	m.Total = len(recs)
	return nil
}

// fillEmpty writes recs into the keystore location to, which must hold no record,
// reads them back and compares them; on failure to is left empty.
func fillEmpty(to string, recs []record) error {
	dst, err := openEmpty(to)
	if err != nil {
		return err
	}
	err = copyRecordsTo(dst, recs)
	if err == nil {
		err = verifyRecords(dst, recs)
	}
	if err != nil {
		return errors.Join(err, clearTarget(dst, to))
	}
	return dst.Close()
}

// openEmpty opens the backend at location to, refusing one that holds any record.
func openEmpty(to string) (backend, error) {
	if !IsEtcd(to) {
		if Exists(to) {
			return nil, fmt.Errorf("keystore %s: %w: a migration only fills an empty keystore", to, ErrExists)
		}
		if err := os.MkdirAll(to, 0o700); err != nil {
			return nil, fmt.Errorf("create keystore folder: %w", err)
		}
		return openBolt(filepath.Join(to, FileName), to)
	}
	l, err := parseEtcd(to)
	if err != nil {
		return nil, err
	}
	b, err := openEtcd(l)
	if err != nil {
		return nil, err
	}
	if recs, err := readAll(b); err != nil || len(recs) > 0 {
		b.Close()
		return nil, errors.Join(err, fmt.Errorf("keystore %s holds %d records: %w: a migration only fills an empty keystore", to, len(recs), ErrExists))
	}
	return b, nil
}

// copyRecordsTo writes recs into dst, as many transactions as etcd needs.
func copyRecordsTo(dst backend, recs []record) error {
	for len(recs) > 0 {
		n := min(len(recs), etcdMaxOps)
		err := dst.Update(func(tx txn) error {
			for _, r := range recs[:n] {
				if err := tx.Put(r.bucket, r.key, r.val); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		recs = recs[n:]
	}
	return nil
}

// verifyRecords reads every record of dst back and compares it with recs.
func verifyRecords(dst backend, recs []record) error {
	got, err := readAll(dst)
	if err != nil {
		return fmt.Errorf("read back: %w", err)
	}
	for i, r := range recs {
		if i >= len(got) || !bytes.Equal(got[i].bucket, r.bucket) || !bytes.Equal(got[i].key, r.key) || !bytes.Equal(got[i].val, r.val) {
			return fmt.Errorf("record %s/%q reads back different from the target (something else writes to it?): %w", r.bucket, r.key, ErrConflict)
		}
	}
	if len(got) != len(recs) {
		return fmt.Errorf("the copy holds %d records, not %d: %w", len(got), len(recs), ErrConflict)
	}
	return nil
}

// clearTarget undoes a failed migration into dst (emptied before it began) and
// closes it.
func clearTarget(dst backend, to string) error {
	var err error
	switch b := dst.(type) {
	case *boltBackend:
		err = errors.Join(b.Close(), os.Remove(filepath.Join(to, FileName)))
		return err
	case *etcdBackend:
		ctx, cancel := context.WithTimeout(context.Background(), etcdTimeout)
		defer cancel()
		if _, derr := b.cli.Delete(ctx, b.loc.root, clientv3.WithPrefix()); derr != nil {
			err = fmt.Errorf("the partial copy under %s stays: delete it before trying again: %w", to, b.classify(derr))
		}
	}
	return errors.Join(err, dst.Close())
}
