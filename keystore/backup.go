package keystore

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ezfs/ezfs/backing"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// Backup writes a consistent copy of the keystore to path (bbolt's copy of a read
// transaction, so writers go on meanwhile), in full or not at all, mode 0600 (see
// writeAtomic: no symlink is followed, an existing path is refused, ErrExists, unless
// force). A path inside the keystore's own folder or one of the folders of avoid (the
// backing directory, the
// keystore folder, the mount: a backup on the disk it is to survive is none, and one
// over the live database would replace it) is refused. It returns the copy's size. The
// keystore holds only wrapped material (zone key versions wrapped by main keys, the
// system provider's private key sealed under its passphrase), and so does the copy.
func (s *Store) Backup(path string, force bool, avoid ...Place) (int64, error) {
	var n int64
	err := writeAtomic(path, force, append(avoid, s.folder), func(f *os.File) error {
		var err error
		n, err = s.db.Backup(f)
		return err
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

// writeAtomic makes path (absolute; mode 0600) with fill's contents, or nothing. The
// writer is root and path may lie in a folder other users write (/tmp), so nothing is
// resolved by name twice and no symlink is followed: the parent folder is opened once
// with no symlink on the way (RESOLVE_NO_SYMLINKS from "/"), a path that is not a
// regular file is refused, the contents go to a new temporary file in that folder
// (O_EXCL), fsynced, then linked in place (refused when path exists) or, with force,
// renamed over it, all relative to the folder's descriptor; the folder is fsynced
// last. A parent inside one of the folders of avoid is refused.
func writeAtomic(path string, force bool, avoid []Place, fill func(f *os.File) error) error {
	dirfd, name, err := openParent(path)
	if err != nil {
		return err
	}
	defer unix.Close(dirfd)
	if err := refuseWithin(dirfd, path, avoid); err != nil {
		return err
	}
	var st unix.Stat_t
	switch err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == nil && st.Mode&unix.S_IFMT != unix.S_IFREG:
		return fmt.Errorf("%s is not a regular file: %w", path, ErrBadInput)
	case err == nil && !force:
		return fmt.Errorf("%s: %w (use --force to replace it)", path, ErrExists)
	case err != nil && err != unix.ENOENT:
		return fmt.Errorf("%s: %w", path, err)
	}
	tmp, f, err := createTemp(dirfd, name)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer unix.Unlinkat(dirfd, tmp, 0) // gone after a rename; a second name after a link
	err = fill(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if force {
		err = unix.Renameat(dirfd, tmp, dirfd, name)
	} else if err = unix.Linkat(dirfd, tmp, dirfd, name, 0); err == unix.EEXIST {
		return fmt.Errorf("%s: %w (use --force to replace it)", path, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return unix.Fsync(dirfd)
}

// openParent opens the folder of absolute path for reading, with no symlink on the
// way, and returns it with path's last name.
func openParent(path string) (int, string, error) {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path || path == "/" {
		return -1, "", fmt.Errorf("%q: want an absolute, clean path to a file: %w", path, ErrBadInput)
	}
	root, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", err
	}
	defer unix.Close(root)
	dir := filepath.Dir(path)
	fd, err := backing.OpenAt(root, dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err == unix.ELOOP || err == unix.EXDEV || err == unix.ENOTDIR {
		return -1, "", fmt.Errorf("%s: not a folder, or a symlink on the way (give the real path): %w", dir, ErrBadInput)
	}
	if err != nil {
		return -1, "", fmt.Errorf("%s: %w", dir, err)
	}
	return fd, filepath.Base(path), nil
}

// Place is a folder a backup must not be written in, by device and inode (taken from
// a descriptor already open: the daemon's backing root, the keystore's folder as it
// was opened); Name is for messages.
type Place struct {
	Name     string
	Dev, Ino uint64
}

// refuseWithin refuses a folder dirfd (path's) that is one of avoid or lies below one,
// by device and inode: its ancestors are walked with "..".
func refuseWithin(dirfd int, path string, avoid []Place) error {
	fd, err := unix.Dup(dirfd)
	if err != nil {
		return err
	}
	for depth := 0; depth < 4096; depth++ {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return err
		}
		for _, a := range avoid {
			if st.Dev == a.Dev && st.Ino == a.Ino {
				unix.Close(fd)
				return fmt.Errorf("%s is inside %s: a backup must not be written there (keep it on another disk): %w", path, a.Name, ErrBadInput)
			}
		}
		up, err := backing.Parent(fd)
		unix.Close(fd)
		if err != nil {
			return err
		}
		var ust unix.Stat_t
		if err := unix.Fstat(up, &ust); err != nil || (ust.Dev == st.Dev && ust.Ino == st.Ino) {
			unix.Close(up)
			return err // reached "/"
		}
		fd = up
	}
	unix.Close(fd)
	return fmt.Errorf("%s: too deep: %w", path, ErrBadInput)
}

// createTemp makes a new file, mode 0600, named after name in the folder dirfd.
func createTemp(dirfd int, name string) (string, *os.File, error) {
	for range 100 {
		var r [8]byte
		if _, err := rand.Read(r[:]); err != nil {
			return "", nil, err
		}
		tmp := "." + name + ".tmp-" + hex.EncodeToString(r[:])
		if len(tmp) > 255 {
			tmp = ".ezfs-backup.tmp-" + hex.EncodeToString(r[:])
		}
		fd, err := unix.Openat(dirfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err == unix.EEXIST {
			continue
		}
		if err != nil {
			return "", nil, err
		}
		return tmp, os.NewFile(uintptr(fd), tmp), nil
	}
	return "", nil, unix.EEXIST
}

// Restored summarises a keystore put back from a backup.
type Restored struct {
	MainKeyVersions int
	ZoneKeys        int
	ZoneKeyVersions int
	Zones           int
}

// Restore makes dir's keystore from the backup file from: the backup is checked
// (bbolt's page check, every record decodes, it has a main key), then its records are
// copied into a new database (bbolt's compaction: nothing of the backup's free pages
// or free list is carried over), which is put in place only when whole. It refuses a
// dir that has a keystore already (ErrExists): a restore never replaces one. The audit
// log in dir records it. An etcd location dir gets the backup's records as a
// migration copies them (Migrate): into an empty prefix, read back and compared.
func Restore(dir, from string) (*Restored, error) {
	var err error
	if !IsEtcd(dir) {
		if dir, err = filepath.Abs(dir); err != nil {
			return nil, err
		}
		if Exists(dir) {
			return nil, fmt.Errorf("keystore %s: %w: a restore does not replace a keystore; move it away first", dir, ErrExists)
		}
	}
	src, err := bolt.Open(from, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err == nil {
		defer src.Close()
		err = checkBackup(src)
	}
	if err != nil {
		return nil, fmt.Errorf("%s is not a keystore backup: %v: %w", from, err, ErrBadInput)
	}
	if IsEtcd(dir) {
		err = restoreRecords(src, dir)
	} else {
		err = restoreFile(src, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("restore keystore %s from %s: %w", dir, from, err)
	}
	s, err := Open(dir)
	if err != nil {
		if !IsEtcd(dir) {
			os.Remove(filepath.Join(dir, FileName)) // checked, yet it does not open: leave no half-restored keystore
		}
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

// restoreFile writes the records of src as a new database file in folder dir.
func restoreFile(src *bolt.DB, dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create keystore folder: %w", err)
	}
	return writeAtomic(filepath.Join(dir, FileName), false, nil, func(f *os.File) error {
		return copyRecords(src, backing.ProcFD(int(f.Fd())))
	})
}

// restoreRecords copies the records of src into the empty etcd keystore at location.
func restoreRecords(src *bolt.DB, location string) error {
	recs, err := readAll(&boltBackend{src})
	if err != nil {
		return err
	}
	return fillEmpty(location, recs)
}

// checkBackup checks an open backup: bbolt's check of every page, then every record
// decodes (a damaged page can make bbolt panic while reading: an error here) and it
// has a main key.
func checkBackup(db *bolt.DB) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("damaged: %v", r)
		}
	}()
	err = db.View(func(tx *bolt.Tx) error {
		var errs []error
		for e := range tx.Check() {
			errs = append(errs, e)
		}
		if len(errs) > 0 {
			return fmt.Errorf("damaged: %w", errs[0])
		}
		for _, b := range [][]byte{bucketMeta, bucketMainKeys, bucketZoneKeys, bucketZones} {
			if tx.Bucket(b) == nil {
				return fmt.Errorf("no %s records", b)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	r, err := (&Store{db: &boltBackend{db}}).summary()
	if err == nil && r.MainKeyVersions == 0 {
		err = errors.New("no main key")
	}
	return err
}

// copyRecords copies every record of src into a new database at path.
func copyRecords(src *bolt.DB, path string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("damaged backup: %v: %w", r, ErrBadInput)
		}
	}()
	dst, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return err
	}
	if err := bolt.Compact(dst, src, 0); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
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
