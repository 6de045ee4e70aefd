package keystore

import (
	"context"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcdOwners is the name (under the root) of the folder of job ownership keys: ROOT
// owners/ZONEID holds its owner's HOST:PID, attached to the owner's lease. It is no
// bucket: ownership is not a record a backup or a migration carries.
const etcdOwners = "owners"

// etcdClaim is a job's ownership key in etcd, created (compare: it did not exist) under
// a lease of its own that a goroutine renews. Writes under the claim compare the key's
// CreateRevision with rev in their transaction: once the lease expired (etcd deleted
// the key) or another daemon claimed the job since (a new key, a new revision), they
// fail.
type etcdClaim struct {
	b     *etcdBackend
	key   string
	lease clientv3.LeaseID
	rev   int64         // the ownership key's CreateRevision
	ttl   time.Duration // the lease's TTL, as etcd granted it
	lost  func()
	stop  context.CancelFunc // ends the renewals
	done  chan struct{}      // closed when renew returned
}

func (b *etcdBackend) ownerKey(zoneID string) string { return b.loc.root + etcdOwners + "/" + zoneID }

// claim creates zoneID's ownership key for owner under a new lease of ttl; lost is
// called once the claim stops holding. If the key exists it returns no claim and the
// key's holder.
func (b *etcdBackend) claim(zoneID, owner string, ttl time.Duration, lost func()) (*etcdClaim, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), etcdTimeout)
	defer cancel()
	g, err := b.cli.Grant(ctx, int64((ttl+time.Second-1)/time.Second))
	if err != nil {
		return nil, "", b.classify(err)
	}
	key := b.ownerKey(zoneID)
	resp, err := b.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, owner, clientv3.WithLease(g.ID))).
		Else(clientv3.OpGet(key)).Commit()
	if err != nil || !resp.Succeeded {
		b.revoke(g.ID) // a Txn that timed out may have committed: its key goes with the lease
		if err != nil {
			return nil, "", b.classify(err)
		}
		holder := "an unknown daemon"
		if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
			holder = string(kvs[0].Value)
		}
		return nil, holder, nil
	}
	kctx, stop := context.WithCancel(context.Background())
	ch, err := b.cli.KeepAlive(kctx, g.ID)
	if err != nil {
		stop()
		b.revoke(g.ID)
		return nil, "", b.classify(err)
	}
	c := &etcdClaim{b: b, key: key, lease: g.ID, rev: resp.Header.Revision, ttl: time.Duration(g.TTL) * time.Second,
		lost: lost, stop: stop, done: make(chan struct{})}
	go c.renew(ch)
	return c, "", nil
}

// renew takes the lease's renewals (the client sends one every third of the TTL). When
// none was answered for two thirds of the TTL, or the renewals ended (the lease
// expired, the client closed), the claim is lost: this daemon stops before etcd can
// have deleted the key, which happens a whole TTL after the last renewal it answered,
// so two daemons never work on one job for longer than a network delay.
func (c *etcdClaim) renew(ch <-chan *clientv3.LeaseKeepAliveResponse) {
	defer close(c.done)
	limit := c.ttl * 2 / 3
	t := time.NewTimer(limit)
	defer t.Stop()
	for {
		select {
		case r, ok := <-ch:
			if !ok || r == nil {
				c.lost()
				return
			}
			t.Reset(limit)
		case <-t.C:
			c.lost()
			c.stop()
			go c.b.revoke(c.lease) // if etcd answers again, another daemon need not wait
			return
		}
	}
}

// release ends the renewals and deletes the key with its lease; if etcd does not
// answer, the lease expires by itself.
func (c *etcdClaim) release() {
	c.stop()
	<-c.done
	c.b.revoke(c.lease)
}

// update is an Update under the claim.
func (c *etcdClaim) update(fn func(txn) error) error { return c.b.update(fn, c) }

func (c *etcdClaim) compare() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(c.key), "=", c.rev)
}

// holds reports whether the ownership key is still this claim's. A key once deleted
// never comes back with the same CreateRevision: a claim that holds now held at any
// earlier commit, whose failure was then the guard's.
func (c *etcdClaim) holds(ctx context.Context) (bool, error) {
	resp, err := c.b.cli.Get(ctx, c.key)
	if err != nil {
		return false, c.b.classify(err)
	}
	return len(resp.Kvs) == 1 && resp.Kvs[0].CreateRevision == c.rev, nil
}

// lostError is the error of a write whose claim no longer holds; it ends the claim.
func (c *etcdClaim) lostError() error {
	c.lost()
	return fmt.Errorf("keystore %s: %s: %w", c.b.name, c.key, ErrClaimLost)
}

func (b *etcdBackend) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), etcdTimeout)
	defer cancel()
	b.cli.Revoke(ctx, id) // an error: the lease expires by itself
}

// owners returns the holder of every ownership key by zone ID.
func (b *etcdBackend) owners() (map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), etcdTimeout)
	defer cancel()
	prefix := b.ownerKey("")
	resp, err := b.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, b.classify(err)
	}
	out := make(map[string]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[strings.TrimPrefix(string(kv.Key), prefix)] = string(kv.Value)
	}
	return out, nil
}
