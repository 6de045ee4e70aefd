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
