package keystore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ezfs/ezfs/keystore/etcdtest"
)

// backends runs fn on a bbolt keystore and on an etcd one, both initialised.
func backends(t *testing.T, fn func(t *testing.T, s *Store, sys *System)) {
	c := etcdtest.Start(t, 1)
	t.Run("bbolt", func(t *testing.T) {
		s, sys := newStore(t)
		fn(t, s, sys)
	})
	t.Run("etcd", func(t *testing.T) {
		s, sys := openStore(t, initEtcd(t, c))
		fn(t, s, sys)
	})
}

// TestBackendTxn checks what the Store relies on of a transaction, on both backends:
// reads see the transaction's writes, ForEach is in key order under a prefix, an
// error rolls everything back, a View cannot write.
func TestBackendTxn(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *System) {
		b := []byte("zones")
		err := s.db.Update(func(tx txn) error {
			for _, k := range []string{"p\x00b", "p\x00a", "q", "p"} {
				if err := tx.Put(b, []byte(k), []byte("v"+k)); err != nil {
					return err
				}
			}
			if err := tx.Delete(b, []byte("p")); err != nil {
				return err
			}
			if v, err := tx.Get(b, []byte("q")); err != nil || string(v) != "vq" {
				return fmt.Errorf("own write: %q %v", v, err)
			}
			var keys []string
			err := tx.ForEach(b, nil, func(k, _ []byte) error { keys = append(keys, string(k)); return nil })
			if want := []string{"p\x00a", "p\x00b", "q"}; err != nil || fmt.Sprint(keys) != fmt.Sprint(want) {
				return fmt.Errorf("own writes in ForEach: %q %v, want %q", keys, err, want)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		boom := errors.New("boom")
		err = s.db.Update(func(tx txn) error {
			_ = tx.Put(b, []byte("p\x00c"), []byte("x"))
			return boom
		})
		if err != boom {
			t.Fatalf("failed update: %v", err)
		}
		var got []string
		err = s.db.View(func(tx txn) error {
			got = nil
			return tx.ForEach(b, []byte("p\x00"), func(k, v []byte) error {
				got = append(got, string(k)+"="+string(v))
				return nil
			})
		})
		if want := []string{"p\x00a=vp\x00a", "p\x00b=vp\x00b"}; err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("ForEach: %q %v, want %q", got, err, want)
		}
		if err := s.db.View(func(tx txn) error { return tx.Put(b, []byte("x"), nil) }); err == nil {
			t.Error("a View wrote")
		}
	})
}

// TestStoreOnBothBackends runs the zone key life through both backends.
func TestStoreOnBothBackends(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, sys *System) {
		ring := NewKeyring(s, []Provider{sys}, nil, time.Minute)
		defer ring.Close()
		if _, err := s.CreateZoneKey("k", ""); err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateZoneKey("k", ""); !errors.Is(err, ErrExists) {
			t.Errorf("second create: %v", err)
		}
		if _, err := s.RollZoneKey("k"); err != nil {
			t.Fatal(err)
		}
		if v, err := s.LatestVersion("k"); v != 2 || err != nil {
			t.Errorf("latest: %d %v", v, err)
		}
		for v := uint32(1); v <= 2; v++ {
			if err := ring.WithZoneKey(context.Background(), "k", v, func([]byte) error { return nil }); err != nil {
				t.Errorf("unwrap k@%d: %v", v, err)
			}
		}
		if _, err := s.ChangeKeyState("k", OpDisable, LifecycleOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := s.Usable("k"); !errors.Is(err, ErrKeyDisabled) {
			t.Errorf("usable after disable: %v", err)
		}
		if err := s.PutZone(&Zone{ID: "z1", Path: "z", Key: "k"}); err != nil {
			t.Fatal(err)
		}
		if zs, err := s.Zones(); err != nil || len(zs) != 1 || zs[0].Key != "k" {
			t.Errorf("zones: %v %v", zs, err)
		}
		if v, err := s.NextMainVersion(DefaultMain); v != 2 || err != nil {
			t.Errorf("next main version: %d %v", v, err)
		}
	})
}

// TestLifecycleOnBothBackends: the guards of key states, version states, main key
// retirement and jobs answer the same on both backends (each check runs in the
// change's own transaction).
func TestLifecycleOnBothBackends(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, sys *System) {
		ring := NewKeyring(s, []Provider{sys}, nil, time.Minute)
		defer ring.Close()
		if _, err := s.CreateZoneKey("k", ""); err != nil {
			t.Fatal(err)
		}
		if err := s.PutZone(&Zone{ID: "z", Path: "a/z", Key: "k"}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ChangeKeyState("k", OpDelete, LifecycleOptions{}); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "/a/z") {
			t.Errorf("delete of a key a zone uses: %v", err)
		}
		cur, err := s.CurrentMainKey("")
		if err != nil {
			t.Fatal(err)
		}
		mk2 := *cur
		mk2.Version = 0
		if err := s.AddMainKey(&mk2); err != nil || mk2.Version != 2 {
			t.Fatalf("add main key version: %v %d", err, mk2.Version)
		}
		if _, err := s.RollZoneKey("k"); err != nil { // k@2 under default v2
			t.Fatal(err)
		}
		v1 := MainRef{DefaultMain, 1}
		if err := s.RetireMainKey(v1); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "k@1") {
			t.Errorf("retire of the only wrap of k@1: %v", err)
		}
		if err := s.RetireMainKey(MainRef{DefaultMain, 2}); !errors.Is(err, ErrInUse) {
			t.Errorf("retire of the current version: %v", err)
		}
		for _, op := range []VersionOp{VersionRetire, VersionPurge} {
			if _, err := s.ChangeVersionState("k", 1, op); err != nil {
				t.Fatalf("%s k@1: %v", op, err)
			}
		}
		if _, err := s.ChangeVersionState("k", 2, VersionRetire); !errors.Is(err, ErrKeyState) {
			t.Errorf("retire of the latest version: %v", err)
		}
		if err := s.RetireMainKey(v1); err != nil {
			t.Errorf("retire of default v1 once nothing depends on it: %v", err)
		}
		if err := s.DeleteZone("z"); err != nil {
			t.Fatal(err)
		}
		now := time.Now().UTC()
		if _, err := s.ChangeKeyState("k", OpDelete, LifecycleOptions{Now: now}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateZoneKey("k", ""); !errors.Is(err, ErrReserved) {
			t.Errorf("create over a deleted key's name: %v", err)
		}
		claim, err := s.ClaimJob("z", 0)
		if err != nil {
			t.Fatal(err)
		}
		defer claim.Release()
		if err := s.PutJob(claim, &Job{ZoneID: "z", Key: "k", Target: 2, State: JobProcessing, Checkpoint: "d/f"}); err != nil {
			t.Fatal(err)
		}
		if js, err := s.Jobs(); err != nil || len(js) != 1 || js[0].Checkpoint != "d/f" || !js[0].Active() {
			t.Errorf("jobs: %+v %v", js, err)
		}
	})
}
