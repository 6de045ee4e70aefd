package keystore

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ezfs/ezfs/keystore/etcdtest"
	bolt "go.etcd.io/bbolt"
)

// goldenKeystores are the golden fixtures' keystores: name → passphrase.
var goldenKeystores = map[string]string{
	"golden-v0": "golden-passphrase", // keystore/testdata: schema 1
	"v1":        "ezfs golden fixture v1",
	"v2":        "ezfs golden fixture v2",
}

// goldenKeystore copies fixture name's keystore file into a new folder.
func goldenKeystore(t *testing.T, name string) string {
	t.Helper()
	dir := t.TempDir()
	var raw []byte
	var err error
	if name == "golden-v0" {
		raw, err = os.ReadFile("testdata/golden-v0/keystore.db")
	} else {
		raw, err = fileInTarGz("../testdata/"+name+".tar.gz", ".ezfs/keystore.db")
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, FileName), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func fileInTarGz(archive, name string) ([]byte, error) {
	f, err := os.Open(archive)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err != nil {
			return nil, err
		}
		if strings.TrimPrefix(h.Name, "./") == name {
			return io.ReadAll(tr)
		}
	}
}

// dumpBolt reads every record of the bbolt keystore in dir with bbolt itself.
func dumpBolt(t *testing.T, dir string) map[string]string {
	t.Helper()
	return dumpBoltFile(t, filepath.Join(dir, FileName))
}

func dumpBoltFile(t *testing.T, path string) map[string]string {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out := map[string]string{}
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				out[string(name)+"/"+string(k)] = string(v)
				return nil
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestMigrateRoundTrip: every golden keystore (all schema 1) goes bbolt → etcd → bbolt with every
// record byte-identical, and the copy's zone keys unwrap with the fixture's
// passphrase.
func TestMigrateRoundTrip(t *testing.T) {
	c := etcdtest.Start(t, 1)
	t.Setenv(EnvLogDir, t.TempDir())
	for name, pass := range goldenKeystores {
		t.Run(name, func(t *testing.T) {
			src := goldenKeystore(t, name)
			loc := c.Location(newPrefix(t))
			m, err := Migrate(src, loc)
			if err != nil {
				t.Fatal(err)
			}
			// The records as the source holds them once open (the fixtures predate
			// schema 2: opening migrated them).
			want := dumpBolt(t, src)
			back := filepath.Join(t.TempDir(), "ks")
			m2, err := Migrate(loc, back)
			if err != nil {
				t.Fatal(err)
			}
			if m.Total != len(want) || m2.Total != len(want) || m.Records["zonekeys"] == 0 || m.Records["mainkeys"] == 0 {
				t.Errorf("counts: %+v then %+v, %d records", m, m2, len(want))
			}
			equalDumps(t, "bbolt → etcd → bbolt", want, dumpBolt(t, back))
			unwrapAll(t, back, pass)
		})
	}
}

func equalDumps(t *testing.T, what string, want, got map[string]string) bool {
	t.Helper()
	ok := len(want) == len(got)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: record %q differs", what, k)
			ok = false
		}
	}
	if len(want) != len(got) {
		t.Errorf("%s: %d records, want %d", what, len(got), len(want))
	}
	return ok
}

// unwrapAll opens the keystore at loc with passphrase and unwraps every version.
func unwrapAll(t *testing.T, loc, passphrase string) {
	t.Helper()
	s, err := Open(loc)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mks, _ := s.MainKeys()
	sys, err := UnlockSystem(mks, []byte(passphrase))
	if err != nil {
		t.Fatal(err)
	}
	ring := NewKeyring(s, []Provider{sys}, nil, time.Minute)
	defer ring.Close()
	zks, err := s.ZoneKeys()
	if err != nil || len(zks) == 0 {
		t.Fatalf("zone keys: %v %v", zks, err)
	}
	for _, zk := range zks {
		for _, kv := range zk.Versions {
			if err := ring.WithZoneKey(context.Background(), zk.Name, kv.Version, func([]byte) error { return nil }); err != nil {
				t.Errorf("unwrap %s@%d: %v", zk.Name, kv.Version, err)
			}
		}
	}
}

// TestMigrateRefusesAFullTarget: a target with records is refused and left as it was.
func TestMigrateRefusesAFullTarget(t *testing.T) {
	c := etcdtest.Start(t, 1)
	t.Setenv(EnvLogDir, t.TempDir())
	src := goldenKeystore(t, "v2")
	full := initEtcd(t, c)
	other := goldenKeystore(t, "v1")
	for _, to := range []string{full, other} {
		before := snapshot(t, to)
		if _, err := Migrate(src, to); !errors.Is(err, ErrExists) {
			t.Errorf("migrate into %s: %v, want ErrExists", to, err)
		}
		if after := snapshot(t, to); !equalDumps(t, "refused target "+to, before, after) {
			t.Errorf("refused target %s changed", to)
		}
	}
	if _, err := Migrate(src, src); !errors.Is(err, ErrExists) && !errors.Is(err, ErrLocked) {
		t.Errorf("migrate into itself: %v", err)
	}
}

// snapshot is every record of the keystore at loc.
func snapshot(t *testing.T, loc string) map[string]string {
	t.Helper()
	s, err := Open(loc)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	recs, err := readAll(s.db)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, r := range recs {
		out[string(r.bucket)+"/"+string(r.key)] = string(r.val)
	}
	return out
}

// TestEtcdBackupRestores: an etcd keystore's backup is a bbolt file of the same
// records, which Restore takes.
func TestEtcdBackupRestores(t *testing.T) {
	c := etcdtest.Start(t, 1)
	loc := initEtcd(t, c)
	s, _ := openStore(t, loc)
	if _, err := s.CreateZoneKey("k", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RollZoneKey("k"); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "backup.db")
	n, err := s.Backup(file, false)
	if err != nil || n == 0 {
		t.Fatalf("backup: %d %v", n, err)
	}
	dir := filepath.Join(t.TempDir(), "restored")
	r, err := Restore(dir, file)
	if err != nil {
		t.Fatal(err)
	}
	if r.ZoneKeys != 1 || r.ZoneKeyVersions != 2 || r.MainKeyVersions != 1 {
		t.Errorf("restored %+v", r)
	}
	equalDumps(t, "etcd → backup → restore", snapshot(t, loc), dumpBolt(t, dir))
	unwrapAll(t, dir, "pw")
}

// TestVerifyRecordsCatchesADifference: the read-back check of a migration fails on a
// changed, a missing and an extra record.
func TestVerifyRecordsCatchesADifference(t *testing.T) {
	s, _ := newStore(t)
	recs, err := readAll(s.db)
	if err != nil || len(recs) < 2 {
		t.Fatalf("%d records: %v", len(recs), err)
	}
	if err := verifyRecords(s.db, recs); err != nil {
		t.Fatalf("identical: %v", err)
	}
	changed := slices.Clone(recs)
	changed[1].val = append(bytes.Clone(changed[1].val), ' ')
	extra := append(slices.Clone(recs), record{bucketZones, []byte("zz"), []byte("{}")})
	for name, want := range map[string][]record{"changed": changed, "missing": extra, "extra": recs[:len(recs)-1]} {
		if err := verifyRecords(s.db, want); err == nil {
			t.Errorf("%s record: verified", name)
		}
	}
}

// TestRestoreIntoEtcd: a bbolt backup restores into an empty etcd prefix, and not
// over a keystore.
func TestRestoreIntoEtcd(t *testing.T) {
	c := etcdtest.Start(t, 1)
	t.Setenv(EnvLogDir, t.TempDir())
	s, _ := newStore(t)
	if _, err := s.CreateZoneKey("k", ""); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "backup.db")
	if _, err := s.Backup(file, false); err != nil {
		t.Fatal(err)
	}
	loc := c.Location(newPrefix(t))
	r, err := Restore(loc, file)
	if err != nil || r.ZoneKeys != 1 || r.MainKeyVersions != 1 {
		t.Fatalf("restore into etcd: %+v %v", r, err)
	}
	equalDumps(t, "backup → etcd", dumpBoltFile(t, file), snapshot(t, loc))
	unwrapAll(t, loc, "pw")
	if _, err := Restore(loc, file); !errors.Is(err, ErrExists) {
		t.Errorf("restore over an etcd keystore: %v", err)
	}
}
