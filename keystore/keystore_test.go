package keystore

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ezfs/ezfs/crypto"
)

// newStore initialises a keystore with a system main key in a temporary folder.
func newStore(t *testing.T) (*Store, *System) {
	t.Helper()
	dir := t.TempDir()
	if _, err := InitSystem(dir, []byte("pw")); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	mks, err := s.MainKeys()
	if err != nil {
		t.Fatal(err)
	}
	sys, err := UnlockSystem(mks, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	return s, sys
}

func TestInitAndUnlock(t *testing.T) {
	s, _ := newStore(t)
	mk, err := s.CurrentMainKey("")
	if err != nil {
		t.Fatal(err)
	}
	if mk.Version != 1 || mk.Provider != KindSystem || mk.OAEPHash != "SHA-256" || mk.Fingerprint == "" || mk.Sealed == nil {
		t.Errorf("main key: %+v", mk)
	}
	if _, err := UnlockSystem([]*MainKey{mk}, []byte("wrong")); !errors.Is(err, ErrPermission) {
		t.Errorf("wrong passphrase: %v, want ErrPermission", err)
	}
	if _, err := Open(s.Dir()); !errors.Is(err, ErrLocked) {
		t.Errorf("second open: %v, want ErrLocked", err)
	}
	if _, err := Create(s.Dir()); !errors.Is(err, ErrExists) {
		t.Errorf("create over an existing keystore: %v", err)
	}
	if _, err := Open(t.TempDir()); !errors.Is(err, ErrNoStore) {
		t.Errorf("open of an empty folder: %v", err)
	}
}

func TestZoneKeysAndKeyring(t *testing.T) {
	s, sys := newStore(t)
	ring := NewKeyring(s, []Provider{sys}, nil, time.Minute)
	defer ring.Close()
	if _, err := s.CreateZoneKey("bad name", ""); !errors.Is(err, ErrBadInput) {
		t.Errorf("bad name: %v", err)
	}
	if _, err := s.RollZoneKey("nokey"); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("roll of a missing key: %v", err)
	}
	if _, err := s.CreateZoneKey("k", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateZoneKey("k", ""); !errors.Is(err, ErrExists) {
		t.Errorf("second create: %v", err)
	}
	zk, err := s.RollZoneKey("k")
	if err != nil {
		t.Fatal(err)
	}
	if zk.Latest().Version != 2 || zk.Latest().MainVersion != 1 || len(zk.Versions) != 2 {
		t.Fatalf("after roll: %+v", zk)
	}
	var k1, k2 []byte
	ctx := context.Background()
	if err := ring.WithZoneKey(ctx, "k", 1, func(k []byte) error { k1 = bytes.Clone(k); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := ring.WithZoneKey(ctx, "k", 2, func(k []byte) error { k2 = bytes.Clone(k); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(k1) != 32 || bytes.Equal(k1, k2) {
		t.Error("zone key versions are not distinct 32-byte keys")
	}
	if ring.Cached() != 2 {
		t.Errorf("cached %d keys, want 2", ring.Cached())
	}
	if err := ring.WithZoneKey(ctx, "k", 3, func([]byte) error { return nil }); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("missing version: %v", err)
	}
}

func TestTamperedWrappedKeyIsRejected(t *testing.T) {
	s, sys := newStore(t)
	if _, err := s.CreateZoneKey("a", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateZoneKey("b", ""); err != nil {
		t.Fatal(err)
	}
	a, _ := s.ZoneKey("a")
	b, _ := s.ZoneKey("b")
	mk, _ := s.CurrentMainKey("")
	ctx := context.Background()
	// A wrapped key moved from "b" to "a" unwraps, but is bound to b@1: refused.
	pt, err := sys.Decrypt(ctx, mk, b.Versions[0].Wrapped)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := crypto.UnwrappedZoneKey(pt, "a", 1); !errors.Is(err, crypto.ErrAuth) {
		t.Errorf("transplanted wrapped key: %v", err)
	}
	flipped := bytes.Clone(a.Versions[0].Wrapped)
	flipped[10] ^= 1
	if _, err := sys.Decrypt(ctx, mk, flipped); !errors.Is(err, ErrInvalidCiphertext) {
		t.Errorf("flipped wrapped key: %v", err)
	}
}

func TestSelfTestCatchesAMismatchedKey(t *testing.T) {
	s, sys := newStore(t)
	mk, _ := s.CurrentMainKey("")
	other, err := NewSystemMainKey([]byte("pw"), "", 1)
	if err != nil {
		t.Fatal(err)
	}
	mk.PublicKey = other.PublicKey
	if err := SelfTest(context.Background(), sys, mk); err == nil {
		t.Error("self-test passed with another key pair's public key")
	}
}
