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
