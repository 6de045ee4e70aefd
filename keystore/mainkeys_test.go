package keystore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestGoldenSchema1 opens the keystore made by the code from before named main keys
// (testdata/golden-v0, never regenerated): its main key is `default` v1, the zone key
// is wrapped under it and unwraps with the fixture's passphrase.
func TestGoldenSchema1(t *testing.T) {
	dir := t.TempDir()
	raw, err := os.ReadFile("testdata/golden-v0/keystore.db")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, FileName), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	pass, err := os.ReadFile("testdata/golden-v0/passphrase")
	if err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 2; round++ { // the second open sees the migrated layout
		s, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		mks, err := s.MainKeys()
		if err != nil || len(mks) != 1 {
			t.Fatalf("main keys: %v %+v", err, mks)
		}
		mk := mks[0]
		if mk.Name != DefaultMain || mk.Version != 1 || mk.Provider != KindSystem || mk.State != StateActive || mk.Sealed == nil {
			t.Errorf("main key: %+v", mk)
		}
		cur, err := s.CurrentMainKey("")
		if err != nil || cur.Ref() != (MainRef{DefaultMain, 1}) {
			t.Errorf("current main key: %v %+v", err, cur)
		}
		zk, err := s.ZoneKey("k")
		if err != nil {
			t.Fatal(err)
		}
		// A record from before rotation policies has none.
		if zk.MainKey != DefaultMain || len(zk.Versions) != round+1 || zk.Versions[0].Main() != (MainRef{DefaultMain, 1}) || zk.Policy != nil {
			t.Errorf("zone key: %+v", zk)
		}
		sys, err := UnlockSystem(mks, pass)
		if err != nil {
			t.Fatal(err)
		}
		ring := NewKeyring(s, []Provider{sys}, nil, time.Minute)
		if err := ring.WithZoneKey(context.Background(), "k", 1, func(k []byte) error { return nil }); err != nil {
			t.Errorf("unwrap k@1: %v", err)
		}
		// A new version is wrapped under default's current version, as before.
		zk, err = s.RollZoneKey("k")
		if err != nil || zk.Latest().Main() != (MainRef{DefaultMain, 1}) {
			t.Errorf("roll: %v %+v", err, zk)
		}
		ring.Close()
		s.Close()
	}
}

// newTenant adds main key name (system, its own version 1) to s.
func newTenant(t *testing.T, s *Store, name string) *MainKey {
	t.Helper()
	mk, err := NewSystemMainKey([]byte("pw"), name, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddMainKey(mk); err != nil {
		t.Fatal(err)
	}
	return mk
}

func TestNamedMainKeys(t *testing.T) {
	s, _ := newStore(t)
	newTenant(t, s, "tenant")
	for _, tc := range []struct {
		key, main string
		want      MainRef
		err       error
	}{
		{"a", "", MainRef{DefaultMain, 1}, nil},
		{"b", "tenant", MainRef{"tenant", 1}, nil},
		{"c", "nosuch", MainRef{}, ErrKeyNotFound},
	} {
		zk, err := s.CreateZoneKey(tc.key, tc.main)
		if !errors.Is(err, tc.err) {
			t.Errorf("create %s under %q: %v, want %v", tc.key, tc.main, err, tc.err)
			continue
		}
		if err == nil && zk.Latest().Main() != tc.want {
			t.Errorf("create %s under %q: wrapped by %s, want %s", tc.key, tc.main, zk.Latest().Main(), tc.want)
		}
	}
	// A second version of tenant changes nothing for default.
	mk2, err := NewSystemMainKey([]byte("pw"), "tenant", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddMainKey(mk2); err != nil || mk2.Version != 2 {
		t.Fatalf("tenant v2: %v %d", err, mk2.Version)
	}
	for key, want := range map[string]MainRef{"a": {DefaultMain, 1}, "b": {"tenant", 2}} {
		zk, err := s.RollZoneKey(key)
		if err != nil || zk.Latest().Main() != want {
			t.Errorf("roll %s: %v, wrapped by %s, want %s", key, err, zk.Latest().Main(), want)
		}
	}
	if err := s.RetireMainKey(MainRef{"tenant", 1}); !errors.Is(err, ErrInUse) {
		t.Errorf("retire tenant v1 that wraps b@1: %v", err)
	}
	if err := s.RetireMainKey(MainRef{"tenant", 2}); !errors.Is(err, ErrInUse) {
		t.Errorf("retire the current version: %v", err)
	}
	if err := s.AddMainKey(&MainKey{Name: "bad name"}); !errors.Is(err, ErrBadInput) {
		t.Errorf("bad main key name: %v", err)
	}
}

// TestSetMainAndRewrap: a zone key moves to another main key and back with the same
// key bytes; rewrap of one main key leaves the others' zone keys alone.
func TestSetMainAndRewrap(t *testing.T) {
	s, sys := newStore(t)
	newTenant(t, s, "tenant")
	mks, _ := s.MainKeys()
	both, err := UnlockSystem(mks, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	sys.Close()
	ring := NewKeyring(s, []Provider{both}, nil, time.Minute)
	defer ring.Close()
	ctx := context.Background()
	if _, err := s.CreateZoneKey("k", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RollZoneKey("k"); err != nil {
		t.Fatal(err)
	}
	keyOf := func(v uint32) []byte {
		t.Helper()
		ring2 := NewKeyring(s, []Provider{both}, nil, time.Minute) // no cache
		defer func() { ring2.pool = newPool(nil); ring2.Close() }()
		var out []byte
		if err := ring2.WithZoneKey(ctx, "k", v, func(k []byte) error { out = bytes.Clone(k); return nil }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	k1, k2 := keyOf(1), keyOf(2)
	for _, tc := range []struct {
		main string
		want MainRef
	}{{"tenant", MainRef{"tenant", 1}}, {DefaultMain, MainRef{DefaultMain, 1}}} {
		n, err := ring.SetMain(ctx, "k", tc.main)
		if err != nil || n != 2 {
			t.Fatalf("set-main %s: %d, %v", tc.main, n, err)
		}
		zk, _ := s.ZoneKey("k")
		if zk.MainKey != tc.main || zk.Versions[0].Main() != tc.want || zk.Versions[1].Main() != tc.want {
			t.Errorf("after set-main %s: %+v", tc.main, zk)
		}
		if !bytes.Equal(keyOf(1), k1) || !bytes.Equal(keyOf(2), k2) {
			t.Errorf("set-main %s changed the zone key bytes", tc.main)
		}
	}
	if _, err := ring.SetMain(ctx, "k", "nosuch"); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("set-main to a missing main key: %v", err)
	}
	// Rewrap of tenant touches nothing wrapped by default.
	if n, err := ring.Rewrap(ctx, "tenant"); err != nil || n != 0 {
		t.Errorf("rewrap tenant: %d %v", n, err)
	}
}

// countingProvider counts calls and closes, and can hold a call in flight.
type countingProvider struct {
	Provider
	closed atomic.Int32
	hold   chan struct{}
	inCall chan struct{}
}

func (c *countingProvider) Decrypt(ctx context.Context, mk *MainKey, ct []byte) ([]byte, error) {
	if c.closed.Load() != 0 {
		return nil, errors.New("decrypt on a closed provider")
	}
	if c.hold != nil {
		c.inCall <- struct{}{}
		<-c.hold
	}
	return c.Provider.Decrypt(ctx, mk, ct)
}

func (c *countingProvider) Close() error { c.closed.Add(1); return nil }

// TestPoolInstancePerVersion: each version gets the instance its opener built; a
// version dropped while another uses the same instance keeps it open; a close waits
// for the call in flight; a failed open is not retried at once.
func TestPoolInstancePerVersion(t *testing.T) {
	s, sys := newStore(t)
	newTenant(t, s, "tenant")
	mks, _ := s.MainKeys()
	both, _ := UnlockSystem(mks, []byte("pw"))
	defer both.Close()
	sys.Close()
	shared := &countingProvider{Provider: both}
	own := &countingProvider{Provider: both, hold: make(chan struct{}), inCall: make(chan struct{}, 1)}
	var opens atomic.Int32
	down := atomic.Bool{}
	open := func(ctx context.Context, mk *MainKey) (Provider, error) {
		opens.Add(1)
		if mk.Name == "tenant" {
			if down.Load() {
				return nil, ErrUnavailable
			}
			return own, nil
		}
		return shared, nil
	}
	ring := NewKeyringOpener(s, open, nil, time.Minute)
	defer ring.Close()
	ctx := context.Background()
	for _, tc := range []struct{ key, main string }{{"a", ""}, {"b", "tenant"}} {
		if _, err := s.CreateZoneKey(tc.key, tc.main); err != nil {
			t.Fatal(err)
		}
	}
	if err := ring.WithZoneKey(ctx, "a", 1, func([]byte) error { return nil }); err != nil {
		t.Fatal(err)
	}
	// An unwrap of b in flight; dropping tenant v1 waits for it.
	var wg sync.WaitGroup
	var inflight error
	wg.Add(1)
	go func() {
		defer wg.Done()
		inflight = ring.WithZoneKey(ctx, "b", 1, func([]byte) error { return nil })
	}()
	<-own.inCall
	dropped := make(chan struct{})
	go func() { ring.Drop(MainRef{"tenant", 1}); close(dropped) }()
	select {
	case <-dropped:
		t.Fatal("the provider was closed under a call in flight")
	case <-time.After(100 * time.Millisecond):
	}
	close(own.hold)
	wg.Wait()
	<-dropped
	if inflight != nil || own.closed.Load() != 1 {
		t.Errorf("in flight: %v; tenant provider closed %d times", inflight, own.closed.Load())
	}
	if shared.closed.Load() != 0 {
		t.Error("the default provider was closed with the tenant's")
	}
	// tenant is down: its zone key fails, default's keeps working, health says so.
	down.Store(true)
	defer func(d time.Duration) { reopenAfter = d }(reopenAfter)
	reopenAfter = time.Minute
	if _, err := s.CreateZoneKey("c", "tenant"); err != nil {
		t.Fatal(err)
	}
	before := opens.Load()
	for i := 0; i < 3; i++ {
		if err := ring.WithZoneKey(ctx, "c", 1, func([]byte) error { return nil }); !errors.Is(err, ErrUnavailable) {
			t.Errorf("unwrap under a down main key: %v", err)
		}
	}
	if n := opens.Load() - before; n != 1 {
		t.Errorf("%d opens of a down provider within %v, want 1", n, reopenAfter)
	}
	if h, ok := ring.Health(MainRef{"tenant", 1}); !ok || h.OK || h.Error == "" {
		t.Errorf("health of the down main key: %+v %v", h, ok)
	}
	if _, err := s.CreateZoneKey("d", ""); err != nil {
		t.Fatal(err)
	}
	if err := ring.WithZoneKey(ctx, "d", 1, func([]byte) error { return nil }); err != nil {
		t.Errorf("default main key while tenant is down: %v", err)
	}
	if h, ok := ring.Health(MainRef{DefaultMain, 1}); !ok || !h.OK {
		t.Errorf("health of default: %+v", h)
	}
}
