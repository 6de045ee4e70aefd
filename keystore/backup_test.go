package keystore

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestBackupRestore: a backup is 0600, refuses to replace a file unless forced, holds
// no key in the clear (neither the system main key's private key nor a zone key), and
// restores every zone key version into an empty folder, never over a keystore.
func TestBackupRestore(t *testing.T) {
	s, sys := newStore(t)
	for _, n := range []string{"a", "b"} {
		if _, err := s.CreateZoneKey(n, ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.RollZoneKey("a"); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ks.backup")
	if _, err := s.Backup(file, false); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("backup mode: %v %v", st.Mode(), err)
	}
	if _, err := s.Backup(file, false); !errors.Is(err, ErrExists) {
		t.Errorf("backup over a file: %v, want ErrExists", err)
	}
	if _, err := s.Backup(file, true); err != nil {
		t.Errorf("backup --force: %v", err)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing in the clear: the private key and each zone key version.
	var secrets [][]byte
	for _, priv := range sys.keys {
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, der, priv.D.Bytes(), priv.Primes[0].Bytes())
	}
	ring := NewKeyring(s, []Provider{sys}, nil, time.Minute)
	defer ring.Close()
	for _, ref := range []versionRef{{"a", 1}, {"a", 2}, {"b", 1}} {
		err := ring.WithZoneKey(context.Background(), ref.name, ref.version, func(k []byte) error {
			secrets = append(secrets, bytes.Clone(k))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for i, sec := range secrets {
		if bytes.Contains(raw, sec[:24]) {
			t.Errorf("secret %d is in the backup in the clear", i)
		}
	}

	dir := filepath.Join(t.TempDir(), "restored")
	if _, err := Restore(s.Dir(), file); !errors.Is(err, ErrExists) {
		t.Errorf("restore over a keystore: %v", err)
	}
	junk := filepath.Join(t.TempDir(), "junk")
	if err := os.WriteFile(junk, bytes.Repeat([]byte("x"), 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Restore(dir, junk); !errors.Is(err, ErrBadInput) || Exists(dir) {
		t.Errorf("restore from a file that is no keystore: %v", err)
	}
	r, err := Restore(dir, file)
	if err != nil {
		t.Fatal(err)
	}
	if r.ZoneKeys != 2 || r.ZoneKeyVersions != 3 || r.MainKeyVersions != 1 {
		t.Errorf("restored: %+v", r)
	}
	s2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	ring2 := NewKeyring(s2, []Provider{sys}, nil, time.Minute)
	defer ring2.Close()
	for i, ref := range []versionRef{{"a", 1}, {"a", 2}, {"b", 1}} {
		err := ring2.WithZoneKey(context.Background(), ref.name, ref.version, func(k []byte) error {
			if !bytes.Equal(k, secrets[len(secrets)-3+i]) {
				t.Errorf("%s@%d restored as another key", ref.name, ref.version)
			}
			return nil
		})
		if err != nil {
			t.Errorf("restored %s@%d: %v", ref.name, ref.version, err)
		}
	}
}

// TestBackupTarget: the backup is written by root, maybe into a folder other users
// write: a symlink as the file (forced or not) or on the way to it is refused and the
// file it points to untouched, and so is a file inside a folder to avoid (the keystore
// folder: a forced backup over the live database would replace it).
func TestBackupTarget(t *testing.T) {
	s, _ := newStore(t)
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("not yours"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "ks.db")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(sub, filepath.Join(dir, "via")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(s.Dir(), "deeper"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, path string
		force      bool
	}{
		{"a symlink as the file", link, false},
		{"a symlink as the file, forced", link, true},
		{"a symlink on the way", filepath.Join(dir, "via", "ks.db"), false},
		{"a relative path", "ks.db", false},
		{"over the live keystore", filepath.Join(s.Dir(), FileName), true},
		{"below the keystore folder", filepath.Join(s.Dir(), "deeper", "ks.db"), false},
	} {
		if _, err := s.Backup(c.path, c.force); !errors.Is(err, ErrBadInput) {
			t.Errorf("%s: %v, want ErrBadInput", c.name, err)
		}
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "not yours" {
		t.Errorf("the symlink's target changed: %q %v", b, err)
	}
	if names, _ := filepath.Glob(filepath.Join(sub, "*")); len(names) > 0 {
		t.Errorf("written through the symlinked folder: %v", names)
	}
	if _, err := Open(s.Dir()); !errors.Is(err, ErrLocked) {
		t.Errorf("the live keystore was replaced: a second open gives %v, want ErrLocked", err)
	}
}

// TestRestoreDamaged: a backup with a damaged page is refused with ErrBadInput (never
// a panic), and nothing is left in the keystore folder; or, where the damage is in
// pages that hold no record (free pages), it restores every record as it was.
func TestRestoreDamaged(t *testing.T) {
	s, _ := newStore(t)
	for _, n := range []string{"a", "b", "c"} {
		if _, err := s.CreateZoneKey(n, ""); err != nil {
			t.Fatal(err)
		}
	}
	good := filepath.Join(t.TempDir(), "ks.backup")
	if _, err := s.Backup(good, false); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	const page = 4096
	for p := 2; p*page < len(raw); p++ {
		bad := bytes.Clone(raw)
		for i := range 16 {
			bad[p*page+i] ^= 0xff
		}
		file := filepath.Join(t.TempDir(), "bad")
		if err := os.WriteFile(file, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), "restored")
		_, err := Restore(dir, file)
		switch {
		case errors.Is(err, ErrBadInput) && Exists(dir):
			t.Errorf("page %d damaged: refused, but a keystore was left in %s", p, dir)
		case err == nil:
			checkSameRecords(t, s, dir)
		case !errors.Is(err, ErrBadInput):
			t.Errorf("page %d damaged: %v, want ErrBadInput or every record back", p, err)
		}
	}
}

// checkSameRecords: the keystore in dir has s's zone keys, versions and wrapped
// material, and its main keys.
func checkSameRecords(t *testing.T, s *Store, dir string) {
	t.Helper()
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	want, _ := s.ZoneKeys()
	got, err := r.ZoneKeys()
	if err != nil || len(got) != len(want) {
		t.Fatalf("zone keys: %d, %v; want %d", len(got), err, len(want))
	}
	for i := range want {
		if got[i].Name != want[i].Name || len(got[i].Versions) != len(want[i].Versions) ||
			!bytes.Equal(got[i].Versions[0].Wrapped, want[i].Versions[0].Wrapped) {
			t.Errorf("zone key %s restored as %+v", want[i].Name, got[i])
		}
	}
	wm, _ := s.MainKeys()
	if gm, err := r.MainKeys(); err != nil || len(gm) != len(wm) {
		t.Errorf("main keys: %d, %v; want %d", len(gm), err, len(wm))
	}
}
