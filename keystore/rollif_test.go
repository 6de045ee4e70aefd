package keystore

import (
	"errors"
	"sync"
	"testing"

	"github.com/ezfs/ezfs/keystore/etcdtest"
)

// onlyV1 is a policy's condition that holds until the key's first roll.
func onlyV1(zk *ZoneKey) bool { return zk.Latest().Version == 1 }

func TestRollZoneKeyIf(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *System) {
		if _, err := s.CreateZoneKey("k", ""); err != nil {
			t.Fatal(err)
		}
		if _, err := s.RollZoneKeyIf("k", onlyV1); err != nil {
			t.Fatalf("first roll: %v", err)
		}
		if _, err := s.RollZoneKeyIf("k", onlyV1); !errors.Is(err, ErrNotDue) {
			t.Fatalf("second roll: %v, want ErrNotDue", err)
		}
		if v, _ := s.LatestVersion("k"); v != 2 {
			t.Errorf("latest version %d, want 2", v)
		}
	})
}

// Two hosts whose policies find the key due at once roll it once: the second
// transaction runs again on the first's record and finds it not due.
func TestEtcdPolicyRollsOnce(t *testing.T) {
	a, b, _ := twoHosts(t, etcdtest.Start(t, 1))
	for range 10 {
		cur, err := a.ZoneKey("k") // a read, not a's cache: no watch runs here
		if err != nil {
			t.Fatal(err)
		}
		v := cur.Latest().Version
		due := func(zk *ZoneKey) bool { return zk.Latest().Version == v }
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, s := range []*Store{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = s.RollZoneKeyIf("k", due)
			}()
		}
		wg.Wait()
		rolled := 0
		for _, err := range errs {
			switch {
			case err == nil:
				rolled++
			case !errors.Is(err, ErrNotDue):
				t.Fatal(err)
			}
		}
		zk, err := b.ZoneKey("k")
		if err != nil {
			t.Fatal(err)
		}
		if rolled != 1 || zk.Latest().Version != v+1 {
			t.Fatalf("due at @%d: %d rolls made, latest @%d; want one roll, @%d", v, rolled, zk.Latest().Version, v+1)
		}
	}
}
