package keystore

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ezfs/ezfs/keystore/etcdtest"
)

// TestEtcdWatch: a change through a second Store is seen by the first's cached
// LatestVersion and Usable within a second.
func TestEtcdWatch(t *testing.T) {
	a, b, _ := twoHosts(t, etcdtest.Start(t, 1))
	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int64
	done := make(chan error)
	go func() { done <- a.Watch(ctx, func() { calls.Add(1) }) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Watch returned %v", err)
		}
	}()
	// Cached on a.
	if v, err := a.LatestVersion("k"); v != 1 || err != nil {
		t.Fatalf("latest: %d %v", v, err)
	}
	if err := a.Usable("k"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.RollZoneKey("k"); err != nil {
		t.Fatal(err)
	}
	within(t, time.Second, "a's LatestVersion after b's roll", func() bool {
		v, err := a.LatestVersion("k")
		return err == nil && v == 2
	})
	if _, err := b.ChangeKeyState("k", OpDisable, LifecycleOptions{}); err != nil {
		t.Fatal(err)
	}
	within(t, time.Second, "a's Usable after b's disable", func() bool {
		return errors.Is(a.Usable("k"), ErrKeyDisabled)
	})
	if calls.Load() < 2 {
		t.Errorf("fn called %d times, want at least 2", calls.Load())
	}
}

// within fails unless cond holds within d.
func within(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not seen within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestBoltWatchIsANoOp(t *testing.T) {
	s, _ := newStore(t)
	if err := s.Watch(context.Background(), func() { t.Error("fn called") }); err != nil {
		t.Error(err)
	}
}

// TestEtcdWatchEndsWithTheStore: closing the Store ends its Watch.
func TestEtcdWatchEndsWithTheStore(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s, err := Open(initEtcd(t, c))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Watch(context.Background(), nil) }()
	time.Sleep(200 * time.Millisecond)
	s.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Watch of a closed Store returned nil")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watch went on after the Store was closed")
	}
}

// TestEtcdWatchAfterCompaction: a watch taken up again from a revision etcd has
// compacted away drops the caches (the changes in between are lost) and starts over.
func TestEtcdWatchAfterCompaction(t *testing.T) {
	c := etcdtest.Start(t, 1)
	a, _, _ := twoHosts(t, c)
	if _, err := a.RollZoneKey("k"); err != nil {
		t.Fatal(err)
	}
	b := a.db.(*etcdBackend)
	rev, err := b.currentRev(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client().Compact(context.Background(), rev); err != nil {
		t.Fatal(err)
	}
	calls := 0
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	next, _ := b.watchFrom(ctx, 1, func() { calls++ })
	if next != 0 || calls != 1 {
		t.Errorf("watch from a compacted revision: next %d, %d calls; want 0, 1", next, calls)
	}
}
