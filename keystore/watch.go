package keystore

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Watch follows changes made to the keystore by anyone (another host's daemon, an
// admin command) until ctx ends: on each it drops the Store's caches, then calls fn
// (nil: none), where a caller drops what it caches of the keystore; it does so once
// too when the watch starts (what was cached before it is not followed). fn runs on
// Watch's goroutine, one change at a time. With a bbolt file this process is the only
// writer and Watch returns nil at once. With etcd it returns ctx's error; a watch the
// cluster breaks (no leader, a member down) is taken up again from the last revision
// seen, so no change is missed, and fn is called once more if etcd compacted the
// revisions in between; it returns an error when the Store is closed.
func (s *Store) Watch(ctx context.Context, fn func()) error {
	b, ok := s.db.(*etcdBackend)
	if !ok {
		return nil
	}
	return b.watch(ctx, func() {
		s.dropCaches()
		if fn != nil {
			fn()
		}
	})
}

// watch calls changed after every etcd revision that changed a key under the root.
func (b *etcdBackend) watch(ctx context.Context, changed func()) error {
	var next int64 // the first revision not seen yet; 0: not started
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		if b.cli.Ctx().Err() != nil {
			return fmt.Errorf("watch keystore %s: closed", b.name)
		}
		if next == 0 {
			rev, err := b.currentRev(ctx)
			if err != nil {
				sleepCtx(ctx, wait)
				wait = min(2*wait, time.Second)
				continue
			}
			changed() // whatever was cached before the watch started
			next = rev + 1
		}
		var ok bool
		if next, ok = b.watchFrom(ctx, next, changed); ok {
			wait = 100 * time.Millisecond
		} else {
			wait = min(2*wait, time.Second)
		}
		sleepCtx(ctx, wait)
	}
	return ctx.Err()
}

// watchFrom watches from revision next until the watch ends and returns the next
// revision to watch from (0 after a compaction: start over), and whether it saw any
// event.
func (b *etcdBackend) watchFrom(ctx context.Context, next int64, changed func()) (int64, bool) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	saw := false
	for resp := range b.cli.Watch(wctx, b.loc.root, clientv3.WithPrefix(), clientv3.WithRev(next)) {
		if resp.CompactRevision != 0 {
			changed()
			return 0, saw
		}
		if resp.Err() != nil {
			return next, saw
		}
		if len(resp.Events) > 0 {
			saw = true
			next = resp.Events[len(resp.Events)-1].Kv.ModRevision + 1
			changed()
		}
	}
	return next, saw
}

func (b *etcdBackend) currentRev(ctx context.Context) (int64, error) {
	rctx, cancel := context.WithTimeout(ctx, etcdTimeout)
	defer cancel()
	resp, err := b.cli.Get(rctx, b.guard())
	if err != nil {
		return 0, b.classify(err)
	}
	return resp.Header.Revision, nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
