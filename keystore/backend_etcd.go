package keystore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcdBackend is a keystore under one etcd prefix, shared by many hosts. A record
// bucket/key is the etcd key ROOT bucket/key with the same value bbolt stores (the
// wrapped material only: nothing reaches etcd that the bbolt file does not hold).
//
// Every Update reads at one revision and commits its writes in one etcd transaction
// that also rewrites the guard key ROOT rev, on condition that the guard's
// ModRevision is still the one read: any commit by anyone since the read fails the
// condition, and the Update runs again (etcdTries times, with backoff). Writers are
// thus serialised across hosts; no update is lost.
type etcdBackend struct {
	cli  *clientv3.Client
	loc  etcdLocation
	name string // the location, for messages
}

// etcdGuard is the name (under the root) of the key every Update rewrites.
const etcdGuard = "rev"

// etcdTries bounds how often an Update runs when concurrent writers keep winning.
const etcdTries = 20

// etcdMaxOps is the most writes one Update may commit (etcd's --max-txn-ops is 128 by
// default; one more is the guard).
const etcdMaxOps = 127

func openEtcd(l etcdLocation) (*etcdBackend, error) {
	cfg, err := etcdConfig(l)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, (&etcdBackend{name: l.String()}).classify(err)
	}
	return &etcdBackend{cli: cli, loc: l, name: l.String()}, nil
}

func (b *etcdBackend) key(bucket, key []byte) string {
	return b.loc.root + string(bucket) + "/" + string(key)
}

func (b *etcdBackend) guard() string { return b.loc.root + etcdGuard }

func (b *etcdBackend) View(fn func(txn) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), etcdTimeout)
	defer cancel()
	t, err := b.begin(ctx, false)
	if err != nil {
		return err
	}
	return fn(t)
}

func (b *etcdBackend) Update(fn func(txn) error) error { return b.update(fn, nil) }

// update is Update whose commit also requires claim c to hold (nil: none), else
// ErrClaimLost (lease_etcd.go).
func (b *etcdBackend) update(fn func(txn) error, c *etcdClaim) error {
	wait := 5 * time.Millisecond
	for range etcdTries {
		done, err := b.try(fn, c)
		if done || err != nil {
			return err
		}
		time.Sleep(wait/2 + rand.N(wait))
		wait = min(2*wait, 200*time.Millisecond)
	}
	return fmt.Errorf("keystore %s: other hosts changed it %d times while this change was being made; try again: %w", b.name, etcdTries, ErrConflict)
}

// try runs fn once and commits its writes (under claim c if not nil); done is false
// when another writer committed since the read (run it again).
func (b *etcdBackend) try(fn func(txn) error, c *etcdClaim) (done bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), etcdTimeout)
	defer cancel()
	t, err := b.begin(ctx, true)
	if err != nil {
		return true, err
	}
	t.claim = c
	if err := fn(t); err != nil {
		return true, err
	}
	if done, err = t.commit(); done || err != nil || c == nil {
		return done, err
	}
	switch ok, err := c.holds(ctx); {
	case err != nil:
		return true, err
	case !ok:
		return true, c.lostError()
	}
	return false, nil
}

// begin starts a transaction at the current revision (a linearizable read of the
// guard).
func (b *etcdBackend) begin(ctx context.Context, write bool) (*etcdTxn, error) {
	resp, err := b.cli.Get(ctx, b.guard())
	if err != nil {
		return nil, b.classify(err)
	}
	t := &etcdTxn{b: b, ctx: ctx, rev: resp.Header.Revision, write: write}
	if len(resp.Kvs) > 0 {
		t.guardMod = resp.Kvs[0].ModRevision
	}
	return t, nil
}

// Backup writes every record, at one revision, into a new bbolt database in f.
func (b *etcdBackend) Backup(f *os.File) (int64, error) {
	recs, err := readAll(b)
	if err != nil {
		return 0, err
	}
	if err := writeBoltFile(f, recs); err != nil {
		return 0, err
	}
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

func (b *etcdBackend) Close() error { return b.cli.Close() }

// classify makes a client error one a caller can branch on: refused credentials are
// ErrPermission; a cluster that does not answer within etcdTimeout (no quorum, no
// member reachable) ErrStoreUnavailable.
func (b *etcdBackend) classify(err error) error {
	for _, e := range []error{rpctypes.ErrAuthFailed, rpctypes.ErrPermissionDenied, rpctypes.ErrInvalidAuthToken,
		rpctypes.ErrUserEmpty, rpctypes.ErrUserNotFound, rpctypes.ErrAuthNotEnabled} {
		if errors.Is(err, e) {
			return fmt.Errorf("%w: %s (%s, %s, %s): %v", errStoreRefused, b.name, EnvEtcdUser, EnvEtcdPasswordFile, EnvEtcdCert, err)
		}
	}
	for _, e := range []error{rpctypes.ErrRequestTooLarge, rpctypes.ErrTooManyOps, rpctypes.ErrNoSpace, rpctypes.ErrCompacted} {
		if errors.Is(err, e) {
			return fmt.Errorf("etcd keystore %s: %w", b.name, err)
		}
	}
	return fmt.Errorf("%w: %s did not answer within %v: %v", ErrStoreUnavailable, b.name, etcdTimeout, err)
}
