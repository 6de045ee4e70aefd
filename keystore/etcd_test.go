package keystore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ezfs/ezfs/keystore/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

var prefixSeq atomic.Int64

// newPrefix is a fresh keystore prefix on etcd.
func newPrefix(t *testing.T) string {
	return fmt.Sprintf("ezfs-test/%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), prefixSeq.Add(1))
}

// initEtcd initialises a keystore with a system main key at a fresh prefix of c.
func initEtcd(t *testing.T, c *etcdtest.Cluster) string {
	t.Helper()
	t.Setenv(EnvLogDir, t.TempDir())
	loc := c.Location(newPrefix(t))
	if _, err := InitSystem(loc, []byte("pw")); err != nil {
		t.Fatal(err)
	}
	return loc
}

// openStore opens loc and unlocks its system main key.
func openStore(t *testing.T, loc string) (*Store, *System) {
	t.Helper()
	s, err := Open(loc)
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

// twoHosts initialises a keystore on c and opens two Stores of it, as two hosts do,
// the first having made zone key k.
func twoHosts(t *testing.T, c *etcdtest.Cluster) (*Store, *Store, *System) {
	t.Helper()
	loc := initEtcd(t, c)
	a, sys := openStore(t, loc)
	b, _ := openStore(t, loc)
	if _, err := a.CreateZoneKey("k", ""); err != nil {
		t.Fatal(err)
	}
	return a, b, sys
}

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

func TestEtcdCreateAndOpen(t *testing.T) {
	c := etcdtest.Start(t, 1)
	loc := initEtcd(t, c)
	if !Exists(loc) {
		t.Error("Exists after init: false")
	}
	if _, err := Create(loc); !errors.Is(err, ErrExists) {
		t.Errorf("create over an existing keystore: %v", err)
	}
	empty := c.Location(newPrefix(t))
	if _, err := Open(empty); !errors.Is(err, ErrNoStore) {
		t.Errorf("open of an empty prefix: %v", err)
	}
	if Exists(empty) {
		t.Error("Exists of an empty prefix: true")
	}
	// Two Stores on one prefix at once: etcd is shared, there is no lock.
	a, _ := openStore(t, loc)
	b, _ := openStore(t, loc)
	if a.Dir() != loc || b.Dir() != loc {
		t.Errorf("Dir: %q, want %q", a.Dir(), loc)
	}
}

// TestEtcdConcurrentRolls: two Stores (two clients, as two hosts) roll one key 20
// times each at once: versions are exactly 1..41, and every one unwraps.
func TestEtcdConcurrentRolls(t *testing.T) {
	a, b, sys := twoHosts(t, etcdtest.Start(t, 1))
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for _, s := range []*Store{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				if _, err := s.RollZoneKey("k"); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	zk, err := b.ZoneKey("k")
	if err != nil {
		t.Fatal(err)
	}
	if len(zk.Versions) != 41 {
		t.Fatalf("%d versions, want 41", len(zk.Versions))
	}
	ring := NewKeyring(a, []Provider{sys}, nil, time.Minute)
	defer ring.Close()
	for i, kv := range zk.Versions {
		if kv.Version != uint32(i+1) {
			t.Fatalf("version %d at position %d: lost or duplicated", kv.Version, i)
		}
		if err := ring.WithZoneKey(context.Background(), "k", kv.Version, func([]byte) error { return nil }); err != nil {
			t.Errorf("unwrap k@%d: %v", kv.Version, err)
		}
	}
}

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

// TestEtcdQuorum: with one member of three stopped the keystore works; with two, an
// Update and a View fail with ErrStoreUnavailable within the timeout; once they are
// back the same Store works again, and its Watch sees changes again.
func TestEtcdQuorum(t *testing.T) {
	c := etcdtest.Start(t, 3)
	s, other, _ := twoHosts(t, c)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Watch(ctx, nil)
	c.Stop(0)
	if _, err := s.RollZoneKey("k"); err != nil {
		t.Fatalf("roll with one member down: %v", err)
	}
	if _, err := s.ZoneKey("k"); err != nil {
		t.Fatalf("read with one member down: %v", err)
	}
	c.Stop(1)
	for name, op := range map[string]func() error{
		"update": func() error { _, err := s.RollZoneKey("k"); return err },
		"view":   func() error { _, err := s.ZoneKeys(); return err },
	} {
		start := time.Now()
		err := op()
		took := time.Since(start)
		if !errors.Is(err, ErrStoreUnavailable) || !errors.Is(err, ErrUnavailable) || !strings.HasPrefix(err.Error(), "keystore unavailable: ") {
			t.Errorf("%s with two members down: %v, want keystore unavailable", name, err)
		}
		if took > etcdTimeout+2*time.Second {
			t.Errorf("%s with two members down took %v", name, took)
		}
		t.Logf("%s: %v after %v", name, err, took.Round(time.Millisecond))
	}
	c.Restart(0)
	c.Restart(1)
	c.WaitHealthy()
	within(t, 10*time.Second, "a roll after the members are back", func() bool {
		_, err := s.RollZoneKey("k")
		return err == nil
	})
	// s's watch was broken while there was no leader: it has been taken up again.
	zk, err := other.RollZoneKey("k")
	if err != nil {
		t.Fatal(err)
	}
	within(t, 2*time.Second, "s's LatestVersion after a roll through another Store", func() bool {
		v, err := s.LatestVersion("k")
		return err == nil && v == zk.Latest().Version
	})
}

// TestEtcdHoldsOnlyWrappedMaterial: every value under the prefix is a record bbolt
// would hold, and no unwrapped zone key nor the passphrase appears in any.
func TestEtcdHoldsOnlyWrappedMaterial(t *testing.T) {
	c := etcdtest.Start(t, 1)
	loc := initEtcd(t, c)
	s, sys := openStore(t, loc)
	if _, err := s.CreateZoneKey("k", ""); err != nil {
		t.Fatal(err)
	}
	ring := NewKeyring(s, []Provider{sys}, nil, time.Minute)
	defer ring.Close()
	var key []byte
	if err := ring.WithZoneKey(context.Background(), "k", 1, func(k []byte) error { key = bytes.Clone(k); return nil }); err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(context.Background(), "/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) < 4 {
		t.Fatalf("%d keys in etcd", len(resp.Kvs))
	}
	for _, kv := range resp.Kvs {
		for _, secret := range [][]byte{key, []byte(`"pw"`)} {
			if bytes.Contains(kv.Value, secret) {
				t.Errorf("%s holds a secret in the clear", kv.Key)
			}
		}
	}
}

func TestParseEtcdLocation(t *testing.T) {
	for _, tc := range []struct {
		loc, root string
		eps       int
	}{
		{"etcd://127.0.0.1:2379/ezfs", "/ezfs/", 1},
		{"etcd://a:1,b:2,c:3/ezfs/prod/", "/ezfs/prod/", 3},
		{"etcd://[::1]:2379/x", "/x/", 1},
		{"etcd://127.0.0.1:2379", "", 0},
		{"etcd://127.0.0.1:2379/", "", 0},
		{"etcd://127.0.0.1/ezfs", "", 0},
		{"etcd://user:pw@127.0.0.1:2379/ezfs", "", 0},
		{"etcd://127.0.0.1:2379/ezfs?password=x", "", 0},
		{"etcd://127.0.0.1:2379/a/../b", "", 0},
		{"etcd://127.0.0.1:2379/ezfs//x", "", 0},
		{"etcd://127.0.0.1:2379/ezfs/zones", "", 0},
		{"etcd://127.0.0.1:2379/rev", "", 0},
		{"etcd://a:1,,b:2/ezfs", "", 0},
	} {
		l, err := parseEtcd(tc.loc)
		if tc.root == "" {
			if !errors.Is(err, ErrBadInput) {
				t.Errorf("%s: %v %+v, want ErrBadInput", tc.loc, err, l)
			}
			continue
		}
		if err != nil || l.root != tc.root || len(l.endpoints) != tc.eps {
			t.Errorf("%s: %+v %v", tc.loc, l, err)
		}
	}
}

// TestEtcdTLSAndAuth: a cluster that wants client certificates and a user is reached
// with the EZFS_ETCD_* files; a wrong password is ErrPermission; a half-given or
// missing setting is refused with its variable's name.
func TestEtcdTLSAndAuth(t *testing.T) {
	c := etcdtest.StartWith(t, 1, etcdtest.Options{TLS: true})
	c.EnableAuth("etcd root pw")
	t.Setenv(EnvLogDir, t.TempDir())
	dir := t.TempDir()
	pwFile, wrongFile := dir+"/pw", dir+"/wrong"
	if err := os.WriteFile(pwFile, []byte("etcd root pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(wrongFile, []byte("nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	loc := c.Location(newPrefix(t))
	set := func(kv ...string) {
		for _, k := range []string{EnvEtcdCA, EnvEtcdCert, EnvEtcdKey, EnvEtcdUser, EnvEtcdPasswordFile} {
			t.Setenv(k, "")
		}
		for i := 0; i < len(kv); i += 2 {
			t.Setenv(kv[i], kv[i+1])
		}
	}
	tlsEnv := []string{EnvEtcdCA, c.TLS.CA, EnvEtcdCert, c.TLS.ClientCert, EnvEtcdKey, c.TLS.ClientKey}
	for _, tc := range []struct {
		name string
		env  []string
		want error
		says string
	}{
		{"no TLS", nil, ErrStoreUnavailable, "keystore unavailable"},
		{"no user", tlsEnv, ErrPermission, "refused the credentials"},
		{"wrong password", append(slices.Clone(tlsEnv), EnvEtcdUser, "root", EnvEtcdPasswordFile, wrongFile), ErrPermission, "refused the credentials"},
		{"user without password", append(slices.Clone(tlsEnv), EnvEtcdUser, "root"), ErrBadInput, EnvEtcdPasswordFile},
		{"cert without key", []string{EnvEtcdCA, c.TLS.CA, EnvEtcdCert, c.TLS.ClientCert}, ErrBadInput, EnvEtcdKey},
		{"missing CA file", []string{EnvEtcdCA, dir + "/none"}, os.ErrNotExist, EnvEtcdCA},
	} {
		set(tc.env...)
		_, err := InitSystem(loc, []byte("pw"))
		if !errors.Is(err, tc.want) || !strings.Contains(fmt.Sprint(err), tc.says) {
			t.Errorf("%s: %v, want %v saying %q", tc.name, err, tc.want, tc.says)
		}
	}
	set(append(slices.Clone(tlsEnv), EnvEtcdUser, "root", EnvEtcdPasswordFile, pwFile)...)
	if _, err := InitSystem(loc, []byte("pw")); err != nil {
		t.Fatal(err)
	}
	s, _ := openStore(t, loc)
	if _, err := s.CreateZoneKey("k", ""); err != nil {
		t.Fatal(err)
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

// TestEtcdConcurrentMainKeyVersions: two hosts add versions of one main key at once
// (kms rotate on both): every version number is given once, 1..20.
func TestEtcdConcurrentMainKeyVersions(t *testing.T) {
	a, b, _ := twoHosts(t, etcdtest.Start(t, 1))
	tmpl, err := a.CurrentMainKey("")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, s := range []*Store{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				mk := *tmpl
				mk.Name, mk.Version = "m", 0
				if err := s.AddMainKey(&mk); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	vs, err := a.MainKeyVersions("m")
	if err != nil || len(vs) != 20 {
		t.Fatalf("%d versions: %v", len(vs), err)
	}
	for i, mk := range vs {
		if mk.Version != uint32(i+1) {
			t.Fatalf("version %d at position %d", mk.Version, i)
		}
	}
	if cur, err := b.CurrentMainKey("m"); err != nil || cur.Version != 20 {
		t.Errorf("current: %v %v", cur, err)
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
		if err := s.PutJob(&Job{ZoneID: "z", Key: "k", Target: 2, State: JobProcessing, Checkpoint: "d/f"}); err != nil {
			t.Fatal(err)
		}
		if js, err := s.Jobs(); err != nil || len(js) != 1 || js[0].Checkpoint != "d/f" || !js[0].Active() {
			t.Errorf("jobs: %+v %v", js, err)
		}
	})
}
