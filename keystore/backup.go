package keystore

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Backup writes a consistent copy of the keystore to path (bbolt's copy of a read
// transaction, so writers go on meanwhile): mode 0600, written to a temporary file
// beside path, fsynced, then put in place. An existing path is refused (ErrExists)
// unless force. It returns the copy's size. The keystore holds only wrapped material
// (zone key versions wrapped by main keys, the system provider's private key sealed
// under its passphrase), and so does the copy.
func (s *Store) Backup(path string, force bool) (int64, error) {
	var n int64
	err := writeAtomic(path, force, func(f *os.File) error {
		return s.db.View(func(tx *bolt.Tx) error {
			var err error
			n, err = tx.WriteTo(f)
			return err
		})
	})
	if err != nil {
		return 0, fmt.Errorf("keystore backup to %s: %w", path, err)
	}
	return n, nil
}

// BackupDir backs up the keystore in dir, opening it itself (nothing mounted: a
// mounted keystore is locked, ErrLocked, and backed up by its daemon), and audits it.
func BackupDir(dir, path string, force bool) (int64, error) {
	s, err := Open(dir)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	n, err := s.Backup(path, force)
	a, aerr := OpenAudit(dir)
	if aerr != nil {
		return n, errors.Join(err, aerr)
	}
	a.Action("keystore.backup", map[string]any{"path": path, "bytes": n, "force": force, "offline": true}, err)
	return n, errors.Join(err, a.Close())
}

// writeAtomic makes path (mode 0600) with fill's contents, or nothing: fill writes a
// temporary file in path's folder, which is fsynced and then linked in place (refused
// when path exists) or, with force, renamed over it; the folder is fsynced last.
func writeAtomic(path string, force bool, fill func(f *os.File) error) error {
	dir := filepath.Dir(path)
	if !force {
		if _, err := os.Lstat(path); err == nil {
			return fmt.Errorf("%s: %w (use --force to replace it)", path, ErrExists)
		}
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	// CreateTemp makes 0600 already; say so rather than rely on it.
	err = tmp.Chmod(0o600)
	if err == nil {
		err = fill(tmp)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if force {
		err = os.Rename(tmp.Name(), path)
	} else if err = os.Link(tmp.Name(), path); errors.Is(err, os.ErrExist) {
		err = fmt.Errorf("%s: %w (use --force to replace it)", path, ErrExists)
	}
	if err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Restored summarises a keystore put back from a backup.
type Restored struct {
	MainKeyVersions int
	ZoneKeys        int
	ZoneKeyVersions int
	Zones           int
}

// Restore makes dir's keystore a copy of the backup file from, after checking that
// it is a keystore this code opens (its records decode, it has a main key). It
// refuses a dir that has a keystore already (ErrExists): a restore never replaces
// one. The audit log in dir records it.
func Restore(dir, from string) (*Restored, error) {
	if Exists(dir) {
		return nil, fmt.Errorf("keystore %s: %w: a restore does not replace a keystore; move it away first", dir, ErrExists)
	}
	src, err := os.Open(from)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	defer src.Close()
	if err := checkBackup(from); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create keystore folder: %w", err)
	}
	err = writeAtomic(filepath.Join(dir, FileName), false, func(f *os.File) error {
		_, err := io.Copy(f, src)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("restore keystore %s: %w", dir, err)
	}
	s, err := Open(dir)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	r, err := s.summary()
	a, aerr := OpenAudit(dir)
	if aerr != nil {
		return nil, aerr
	}
	a.Action("keystore.restore", map[string]any{"from": from, "zone_keys": r.ZoneKeys, "zone_key_versions": r.ZoneKeyVersions}, err)
	return r, errors.Join(err, a.Close())
}

// checkBackup opens file read-only as a keystore and decodes what it holds.
func checkBackup(file string) error {
	db, err := bolt.Open(file, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("%s is not a keystore backup: %v: %w", file, err, ErrBadInput)
	}
	defer db.Close()
	s := &Store{db: db}
	err = db.View(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketMainKeys, bucketZoneKeys, bucketZones} {
			if tx.Bucket(b) == nil {
				return fmt.Errorf("no %s records", b)
			}
		}
		return nil
	})
	var r *Restored
	if err == nil {
		r, err = s.summary()
	}
	if err == nil && r.MainKeyVersions == 0 {
		err = errors.New("no main key")
	}
	if err != nil {
		return fmt.Errorf("%s is not a keystore backup: %v: %w", file, err, ErrBadInput)
	}
	return nil
}

// summary counts what the keystore holds, decoding every record.
func (s *Store) summary() (*Restored, error) {
	mks, err := s.MainKeys()
	if err != nil {
		return nil, err
	}
	zks, err := s.ZoneKeys()
	if err != nil {
		return nil, err
	}
	r := &Restored{MainKeyVersions: len(mks), ZoneKeys: len(zks)}
	for _, zk := range zks {
		r.ZoneKeyVersions += len(zk.Versions)
	}
	zs, err := listJSON[Zone](s.db, bucketZones)
	r.Zones = len(zs)
	return r, err
}
