package keystore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNextState(t *testing.T) {
	states := []string{StateActive, StateDisabled, StateDeleted, StatePurged}
	// want[op][from] is the state op leads to; "" where op is refused.
	want := map[LifecycleOp]map[string]string{
		OpDisable: {StateActive: StateDisabled},
		OpEnable:  {StateDisabled: StateActive},
		OpDelete:  {StateActive: StateDeleted, StateDisabled: StateDeleted},
		OpRecover: {StateDeleted: StateDisabled},
		OpPurge:   {StateDeleted: StatePurged},
	}
	for op, to := range want {
		for _, from := range states {
			got, err := NextState(op, from)
			if to[from] == "" {
				if !errors.Is(err, ErrKeyState) {
					t.Errorf("%s from %s: %q, %v; want ErrKeyState", op, from, got, err)
				}
				continue
			}
			if err != nil || got != to[from] {
				t.Errorf("%s from %s: %q, %v; want %q", op, from, got, err, to[from])
			}
		}
	}
	if _, err := NextState("explode", StateActive); !errors.Is(err, ErrBadInput) {
		t.Errorf("unknown op: %v", err)
	}
}

// TestKeyLifecycle walks a key through every state in the store, with the guards of
// each step.
func TestKeyLifecycle(t *testing.T) {
	s, sys := newStore(t)
	ring := NewKeyring(s, []Provider{sys}, nil, time.Minute)
	defer ring.Close()
	ctx := context.Background()
	for _, n := range []string{"k", "other"} {
		if _, err := s.CreateZoneKey(n, ""); err != nil {
			t.Fatal(err)
		}
	}
	unwrap := func(name string) error {
		return ring.WithZoneKey(ctx, name, 1, func([]byte) error { return nil })
	}
	if err := unwrap("k"); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	steps := []struct {
		op      LifecycleOp
		o       LifecycleOptions
		state   string // after the step; "" when it is refused
		refused error
	}{
		{OpEnable, LifecycleOptions{}, "", ErrKeyState},
		{OpDisable, LifecycleOptions{}, StateDisabled, nil},
		{OpDisable, LifecycleOptions{}, "", ErrKeyState},
		{OpRecover, LifecycleOptions{}, "", ErrKeyState},
		{OpDelete, LifecycleOptions{Retention: time.Hour, Now: now}, "", ErrBadInput},
		{OpDelete, LifecycleOptions{Now: now}, StateDeleted, nil},
		{OpRecover, LifecycleOptions{}, StateDisabled, nil},
		{OpDelete, LifecycleOptions{Retention: time.Hour, MinRetention: time.Minute, Now: now}, StateDeleted, nil},
		{OpPurge, LifecycleOptions{Now: now.Add(time.Minute)}, "", ErrKeyState},
		{OpPurge, LifecycleOptions{Now: now.Add(2 * time.Hour)}, StatePurged, nil},
		{OpRecover, LifecycleOptions{}, "", ErrKeyState},
	}
	for i, st := range steps {
		zk, err := s.ChangeKeyState("k", st.op, st.o)
		if st.refused != nil {
			if !errors.Is(err, st.refused) {
				t.Fatalf("step %d %s: %v, want %v", i, st.op, err, st.refused)
			}
			continue
		}
		if err != nil || zk.KeyState() != st.state {
			t.Fatalf("step %d %s: %v, state %+v, want %s", i, st.op, err, zk, st.state)
		}
		if err := unwrap("k"); !errors.Is(err, ErrKeyDisabled) || !errors.Is(err, ErrPermission) {
			t.Errorf("step %d: unwrap of a %s key: %v", i, st.state, err)
		}
		if err := unwrap("other"); err != nil {
			t.Errorf("step %d: another key: %v", i, err)
		}
	}
	zk, _ := s.ZoneKey("k")
	if zk.Purged == nil || zk.PurgeAfter == nil || !zk.PurgeAfter.Equal(now.Add(time.Hour)) || len(zk.Versions[0].Wrapped) != 0 {
		t.Errorf("purged key: %+v", zk)
	}
	if _, err := s.CreateZoneKey("k", ""); !errors.Is(err, ErrReserved) || !errors.Is(err, ErrExists) {
		t.Errorf("create of a purged key's name: %v", err)
	}
	if _, err := s.RollZoneKey("k"); !errors.Is(err, ErrKeyState) {
		t.Errorf("roll of a purged key: %v", err)
	}
}

func TestDeleteRefusedWhileAZoneUsesTheKey(t *testing.T) {
	s, _ := newStore(t)
	if _, err := s.CreateZoneKey("k", ""); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"b", "a/z"} {
		if err := s.PutZone(&Zone{ID: p, Path: p, Key: "k"}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := s.ChangeKeyState("k", OpDelete, LifecycleOptions{})
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "/a/z, /b") {
		t.Fatalf("delete of a key in use: %v", err)
	}
	for _, id := range []string{"b", "a/z"} {
		if err := s.DeleteZone(id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.ChangeKeyState("k", OpDelete, LifecycleOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestRetireVersionAndMainKeyGuard(t *testing.T) {
	s, sys := newStore(t)
	ring := NewKeyring(s, []Provider{sys}, nil, time.Minute)
	defer ring.Close()
	if _, err := s.CreateZoneKey("k", ""); err != nil {
		t.Fatal(err)
	}
	mk2, err := NewSystemMainKey([]byte("pw"), DefaultMain, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddMainKey(mk2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RollZoneKey("k"); err != nil { // k@2 under default v2
		t.Fatal(err)
	}
	v1 := MainRef{DefaultMain, 1}
	if err := s.RetireMainKey(v1); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "k@1") {
		t.Errorf("retire of the only wrap of k@1: %v", err)
	}
	unwrap := func() error {
		return ring.WithZoneKey(context.Background(), "k", 1, func([]byte) error { return nil })
	}
	if err := unwrap(); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		op      VersionOp
		version uint32
		state   string // of the version after the step; "" when refused
		refused error
	}{
		{VersionRetire, 2, "", ErrKeyState}, // the latest version
		{VersionRetire, 7, "", ErrKeyNotFound},
		{VersionPurge, 1, "", ErrKeyState}, // not retired yet
		{VersionRecover, 1, "", ErrKeyState},
		{VersionRetire, 1, StateRetired, nil},
		{VersionRetire, 1, "", ErrKeyState},
		{VersionRecover, 1, StateActive, nil},
		{VersionRetire, 1, StateRetired, nil},
	}
	for i, st := range steps {
		ring.Forget("k", 1) // as the daemon does after each change
		zk, err := s.ChangeVersionState("k", st.version, st.op)
		if st.state == "" {
			if !errors.Is(err, st.refused) {
				t.Errorf("step %d %s k@%d: %v; want %v", i, st.op, st.version, err, st.refused)
			}
			continue
		}
		if err != nil || zk.Versions[0].VersionState() != st.state {
			t.Fatalf("step %d %s k@%d: %v %+v", i, st.op, st.version, err, zk)
		}
		if got := unwrap(); (st.state == StateActive) != (got == nil) {
			t.Errorf("step %d: k@1 %s, unwrap: %v", i, st.state, got)
		}
	}
	// Retired: never unwrapped, its material kept, so default v1 still may not go,
	// and kms rewrap leaves it alone.
	if err := unwrap(); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("unwrap of a retired version: %v", err)
	}
	if n, err := ring.Rewrap(context.Background(), DefaultMain); err != nil || n != 0 {
		t.Errorf("rewrap with k@1 retired: %d %v; want 0 (skipped)", n, err)
	}
	if err := s.RetireMainKey(v1); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "k@1") {
		t.Errorf("retire of default v1 while retired k@1 still holds material under it: %v", err)
	}
	zk, err := s.ChangeVersionState("k", 1, VersionPurge)
	if err != nil || zk.Versions[0].VersionState() != StatePurged || len(zk.Versions[0].Wrapped) != 0 {
		t.Fatalf("purge k@1: %v %+v", err, zk)
	}
	if _, err := s.ChangeVersionState("k", 1, VersionRecover); !errors.Is(err, ErrKeyState) {
		t.Errorf("recover of a purged version: %v", err)
	}
	if err := s.RetireMainKey(v1); err != nil {
		t.Errorf("retire of default v1 once nothing depends on it: %v", err)
	}
}

// TestOldRetiredVersionsReadPurged: a version retired before retire was soft has no
// material; it reads as purged.
func TestOldRetiredVersionsReadPurged(t *testing.T) {
	kv := ZoneKeyVersion{Version: 1, State: StateRetired}
	if kv.VersionState() != StatePurged || kv.Unwrappable() {
		t.Errorf("%+v: %s", kv, kv.VersionState())
	}
	kv.Wrapped = []byte{1}
	if kv.VersionState() != StateRetired || kv.Unwrappable() {
		t.Errorf("%+v: %s", kv, kv.VersionState())
	}
}

// TestUnwrapInFlightDuringDisable: an unwrap that started while the key was active
// and ends after it was disabled (a slow provider) does not cache the key, nor hand
// it out.
func TestUnwrapInFlightDuringDisable(t *testing.T) {
	s, sys := newStore(t)
	slow := &countingProvider{Provider: sys, hold: make(chan struct{}), inCall: make(chan struct{}, 1)}
	ring := NewKeyring(s, []Provider{slow}, nil, time.Minute)
	defer ring.Close()
	if _, err := s.CreateZoneKey("k", ""); err != nil {
		t.Fatal(err)
	}
	for _, change := range []struct {
		name string
		do   func() error
		undo func() error
		want error
	}{
		{"disable", func() error { _, err := s.ChangeKeyState("k", OpDisable, LifecycleOptions{}); return err },
			func() error { _, err := s.ChangeKeyState("k", OpEnable, LifecycleOptions{}); return err }, ErrKeyDisabled},
		{"retire", func() error {
			if _, err := s.ChangeVersionState("k", 1, VersionRetire); err != nil {
				return err
			}
			ring.Forget("k", 1)
			return nil
		}, func() error { _, err := s.ChangeVersionState("k", 1, VersionRecover); return err }, ErrKeyNotFound},
	} {
		if change.name == "retire" {
			if _, err := s.RollZoneKey("k"); err != nil {
				t.Fatal(err)
			}
		}
		ring.Forget("k", 0) // a key the previous case cached (if it was wrongly cached)
		done := make(chan error, 1)
		called := false
		go func() {
			done <- ring.WithZoneKey(context.Background(), "k", 1, func([]byte) error { called = true; return nil })
		}()
		<-slow.inCall
		if err := change.do(); err != nil {
			t.Fatal(err)
		}
		slow.hold <- struct{}{}
		if err := <-done; !errors.Is(err, change.want) || called {
			t.Errorf("%s during the unwrap: %v (fn called: %v); want %v", change.name, err, called, change.want)
		}
		if n := ring.Cached(); n != 0 {
			t.Errorf("%s during the unwrap: %d keys cached", change.name, n)
		}
		if err := change.undo(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestGoldenKeysAreActive: zone keys written before states were kept read as active.
func TestGoldenKeysAreActive(t *testing.T) {
	dir := t.TempDir()
	raw, err := os.ReadFile("testdata/golden-v0/keystore.db")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, FileName), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	zk, err := s.ZoneKey("k")
	if err != nil || zk.KeyState() != StateActive || s.Usable("k") != nil {
		t.Fatalf("golden key: %v %+v", err, zk)
	}
	if _, err := s.ChangeKeyState("k", OpDisable, LifecycleOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestStateSurvivesReopen: the state is the keystore's, not only the memory's.
func TestStateSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	if _, err := InitSystem(dir, []byte("pw")); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateZoneKey("k", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ChangeKeyState("k", OpDisable, LifecycleOptions{}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = Open(dir); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Usable("k"); !errors.Is(err, ErrKeyDisabled) {
		t.Errorf("disabled key after a reopen: %v", err)
	}
}
