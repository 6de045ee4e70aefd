package etcdtest

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// TestClientWorksWithServer checks what ezfs uses of the client against the server the
// tests run (Debian's may be older than the client): KV, Txn, Watch, Lease and an
// election.
func TestClientWorksWithServer(t *testing.T) {
	c := Start(t, 1)
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w := cli.Watch(ctx, "/t/", clientv3.WithPrefix())
	resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision("/t/a"), "=", 0)).
		Then(clientv3.OpPut("/t/a", "1")).Commit()
	if err != nil || !resp.Succeeded {
		t.Fatalf("txn: %v %v", resp, err)
	}
	if ev := <-w; len(ev.Events) != 1 || string(ev.Events[0].Kv.Value) != "1" {
		t.Fatalf("watch: %+v", ev)
	}
	lease, err := cli.Grant(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/t/leased", "x", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.KeepAliveOnce(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Revoke(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	if g, err := cli.Get(ctx, "/t/leased"); err != nil || len(g.Kvs) != 0 {
		t.Fatalf("leased key after revoke: %v %v", g, err)
	}
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	e := concurrency.NewElection(sess, "/t/election")
	if err := e.Campaign(ctx, "me"); err != nil {
		t.Fatal(err)
	}
	if l, err := e.Leader(ctx); err != nil || string(l.Kvs[0].Value) != "me" {
		t.Fatalf("leader: %v %v", l, err)
	}
}
