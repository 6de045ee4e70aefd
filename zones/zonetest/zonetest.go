// Package zonetest builds backing directories with a zone of many files written
// straight to the disk in the zone format (EDEK record, header, sealed blocks), for
// the benchmarks of the tools that walk zones (reencrypt, fsck): far faster than
// through a mount, and the same bytes.
package zonetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/ezfs/ezfs/backing"
	"github.com/ezfs/ezfs/crypto"
	"github.com/ezfs/ezfs/keystore"
	"github.com/ezfs/ezfs/zones"
	"golang.org/x/sys/unix"
)

// Passphrase is the system main key's passphrase of every fixture.
const Passphrase = "bench"

// Files is EZFS_BENCH_FILES, or def.
func Files(def int) int {
	if n, err := strconv.Atoi(os.Getenv("EZFS_BENCH_FILES")); err == nil && n > 0 {
		return n
	}
	return def
}

// Fixture is a backing directory with an initialised keystore (system provider), a
// zone key and a zone registered in the keystore and marked on its root.
type Fixture struct {
	Backing, KeystoreDir string
	Store                *keystore.Store
	Keys                 *zones.Keys
	Zone                 *zones.Zone
	ZonePath             string // relative to Backing
}

// New makes a fixture in a temporary directory: zone "zone" under key.
func New(tb testing.TB, key string) *Fixture {
	tb.Helper()
	return NewAt(tb, key, "")
}

// NewAt is New with the keystore at location (a folder or an etcd location; "": the
// backing directory's .ezfs).
func NewAt(tb testing.TB, key, location string) *Fixture {
	tb.Helper()
	f := &Fixture{Backing: tb.TempDir(), ZonePath: "zone", Zone: &zones.Zone{ID: [16]byte{7}, Key: key}, KeystoreDir: location}
	if location == "" {
		f.KeystoreDir = filepath.Join(f.Backing, ".ezfs")
	}
	if _, err := keystore.InitSystem(f.KeystoreDir, []byte(Passphrase)); err != nil {
		tb.Fatal(err)
	}
	store, err := keystore.Open(f.KeystoreDir)
	if err != nil {
		tb.Fatal(err)
	}
	f.Store = store
	mks, _ := store.MainKeys()
	sys, err := keystore.UnlockSystem(mks, []byte(Passphrase))
	if err != nil {
		tb.Fatal(err)
	}
	ring := keystore.NewKeyring(store, []keystore.Provider{sys}, nil, time.Hour)
	tb.Cleanup(func() { ring.Close(); f.Close() })
	f.Keys = &zones.Keys{Ring: ring}
	if _, err := store.CreateZoneKey(key, ""); err != nil {
		tb.Fatal(err)
	}
	root := filepath.Join(f.Backing, f.ZonePath)
	if err := os.Mkdir(root, 0o755); err != nil {
		tb.Fatal(err)
	}
	// Opened beneath the backing root, as the daemon opens zone roots (no path from /).
	br, err := backing.OpenRoot(f.Backing)
	if err != nil {
		tb.Fatal(err)
	}
	defer br.Close()
	rfd, err := br.Open(f.ZonePath, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer unix.Close(rfd)
	if err := zones.WriteMarker(rfd, f.Zone); err != nil {
		tb.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(rfd, &st); err != nil {
		tb.Fatal(err)
	}
	err = store.PutZone(&keystore.Zone{ID: f.Zone.IDString(), Path: f.ZonePath, Key: key, Created: time.Now().UTC(), Dev: st.Dev, Ino: st.Ino})
	if err != nil {
		tb.Fatal(err)
	}
	return f
}

// AddFiles writes n files into the zone, spread over 1,000 directories, each with
// contents (none: empty files) sealed under its own data key.
func (f *Fixture) AddFiles(tb testing.TB, n int, contents []byte) {
	tb.Helper()
	f.add(tb, n, "f", contents, func() ([]byte, []byte, crypto.FileID, error) {
		return f.Keys.NewFileKey(context.Background(), f.Zone)
	})
}

// AddFilesUnder writes n files named d000/KEY000000, ... into the zone, as AddFiles,
// with EDEK records in format v1 naming the latest version of zone key key (which
// need not be the zone's): as an older ezfs wrote them before a key set.
func (f *Fixture) AddFilesUnder(tb testing.TB, n int, key string, contents []byte) {
	tb.Helper()
	version, err := f.Store.LatestVersion(key)
	if err != nil {
		tb.Fatal(err)
	}
	f.add(tb, n, key, contents, func() (dek, rec []byte, id crypto.FileID, err error) {
		if id, err = crypto.NewFileID(); err != nil {
			return nil, nil, id, err
		}
		if dek, err = crypto.NewDEK(); err != nil {
			return nil, nil, id, err
		}
		err = f.Keys.Ring.WithZoneKey(context.Background(), key, version, func(zk []byte) error {
			e, err := crypto.SealDEKFormat(crypto.EDEKv1, zk, f.Zone.ID, key, version, id, dek)
			if err == nil {
				rec, err = e.MarshalBinary()
			}
			return err
		})
		return dek, rec, id, err
	})
}

// add writes n files named dNNN/PREFIXnnnnnn with contents under the data keys newKey
// makes.
func (f *Fixture) add(tb testing.TB, n int, prefix string, contents []byte, newKey func() ([]byte, []byte, crypto.FileID, error)) {
	tb.Helper()
	for i := 0; i < n; i++ {
		dir := filepath.Join(f.Backing, f.ZonePath, fmt.Sprintf("d%03d", i%1000))
		if i < 1000 {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				tb.Fatal(err)
			}
		}
		dek, rec, id, err := newKey()
		if err != nil {
			tb.Fatal(err)
		}
		data, err := seal(dek, id, contents)
		clear(dek)
		if err != nil {
			tb.Fatal(err)
		}
		p := filepath.Join(dir, fmt.Sprintf("%s%06d", prefix, i))
		if err := writeFile(p, data, rec); err != nil {
			tb.Fatal(err)
		}
	}
}

// seal is the backing bytes of a file holding contents: header and sealed blocks.
func seal(dek []byte, id crypto.FileID, contents []byte) ([]byte, error) {
	if len(contents) == 0 {
		return nil, nil
	}
	cc, err := crypto.NewContentCipher(dek, id)
	if err != nil {
		return nil, err
	}
	out := crypto.Header(id)
	for i := 0; i*crypto.BlockSize < len(contents); i++ {
		block := contents[i*crypto.BlockSize : min((i+1)*crypto.BlockSize, len(contents))]
		if out, err = cc.SealBlock(out, block, int64(i)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Close closes the keystore (fsck opens it itself); the keyring stays until cleanup.
func (f *Fixture) Close() {
	if f.Store != nil {
		f.Store.Close()
		f.Store = nil
	}
}

// writeFile writes the zone file p (new, or over one of an earlier call) with its
// contents and, through the same descriptor, its EDEK record (zones.WriteEDEK: the one
// place for the xattr).
func writeFile(p string, data, rec []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = zones.WriteEDEK(int(f.Fd()), rec, false)
	}
	if errors.Is(err, unix.EEXIST) {
		err = zones.WriteEDEK(int(f.Fd()), rec, true)
	}
	return errors.Join(err, f.Close())
}
