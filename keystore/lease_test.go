package keystore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ezfs/ezfs/keystore/etcdtest"
)

// isClosed reports whether ch is closed.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// claimedByA starts etcd with a keystore that two hosts' Stores open, a having
// claimed zone z's job with a lease of ttl.
func claimedByA(t *testing.T, ttl time.Duration) (c *etcdtest.Cluster, a, b *Store, ca *Claim) {
	t.Helper()
	c = etcdtest.Start(t, 1)
	a, b, _ = twoHosts(t, c)
	ca, err := a.ClaimJob("z", ttl)
	if err != nil {
		t.Fatal(err)
	}
	return c, a, b, ca
}

// TestJobClaimOnBothBackends: one claim per zone's job at a time, writes only under a
// claim that holds, and Jobs shows the live owner of an unfinished job.
func TestJobClaimOnBothBackends(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *System) {
		c, err := s.ClaimJob("z", 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.ClaimJob("z", 2*time.Second); !errors.Is(err, ErrClaimed) {
			t.Errorf("second claim of z: %v", err)
		}
		other, err := s.ClaimJob("y", 2*time.Second)
		if err != nil {
			t.Fatalf("claim of another zone's job: %v", err)
		}
		j := &Job{ZoneID: "z", Key: "k", Target: 2, State: JobProcessing, Owner: c.Owner()}
		if err := s.PutJob(c, j); err != nil {
			t.Fatal(err)
		}
		for name, bad := range map[string]*Claim{"no claim": nil, "another zone's claim": other} {
			if err := s.PutJob(bad, j); !errors.Is(err, ErrClaimLost) {
				t.Errorf("write with %s: %v", name, err)
			}
		}
		if got, err := s.Job("z"); err != nil || got == nil || got.Owner != c.Owner() || got.Owner != daemonID() {
			t.Errorf("job while claimed: %+v %v, want owner %s", got, err, daemonID())
		}
		c.Release()
		if !isClosed(c.Lost()) {
			t.Error("a released claim is not lost")
		}
		if err := s.PutJob(c, j); !errors.Is(err, ErrClaimLost) {
			t.Errorf("write with a released claim: %v", err)
		}
		if got, err := s.Job("z"); err != nil || got.Owner != "" || !got.Active() {
			t.Errorf("unfinished job nobody owns: %+v %v, want no owner", got, err)
		}
		again, err := s.ClaimJob("z", 2*time.Second)
		if err != nil {
			t.Fatalf("claim after the release: %v", err)
		}
		j.State = JobCompleted
		if err := s.PutJob(again, j); err != nil {
			t.Fatal(err)
		}
		again.Release()
		other.Release()
		if got, err := s.Job("z"); err != nil || got.Owner != daemonID() {
			t.Errorf("finished job: %+v %v, want the owner that ended it", got, err)
		}
	})
}

// TestEtcdJobTakeover: host a claims a job and checkpoints; host b cannot claim it. a
// dies without releasing (its client closes): b claims within the lease TTL and
// checkpoints; a's last, late checkpoint is refused.
func TestEtcdJobTakeover(t *testing.T) {
	const ttl = 2 * time.Second
	_, a, b, ca := claimedByA(t, ttl)
	ja := &Job{ZoneID: "z", Key: "k", Target: 2, State: JobProcessing, Checkpoint: "a/1", Owner: ca.Owner()}
	if err := a.PutJob(ca, ja); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ClaimJob("z", ttl); !errors.Is(err, ErrClaimed) {
		t.Fatalf("b's claim of a's job: %v", err)
	}
	if j, err := b.Job("z"); err != nil || j.Owner != ca.Owner() {
		t.Errorf("b sees %+v %v, want owner %s", j, err, ca.Owner())
	}
	died := time.Now()
	a.Close() // a dies: nothing is released, its lease stops being renewed
	var cb *Claim
	for cb == nil {
		var err error
		if cb, err = b.ClaimJob("z", ttl); err != nil && !errors.Is(err, ErrClaimed) {
			t.Fatal(err)
		}
		if time.Since(died) > ttl+2*time.Second { // the TTL, etcd's expiry check every 500ms, a margin
			t.Fatalf("b could not claim the job %v after a died (lease TTL %v)", time.Since(died), ttl)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer cb.Release()
	t.Logf("b claimed the job %v after a died", time.Since(died).Round(10*time.Millisecond))
	if !isClosed(ca.Lost()) {
		t.Error("a's claim is not lost after its client closed")
	}
	j, err := b.Job("z")
	if err != nil || j.Checkpoint != "a/1" || j.Owner != cb.Owner() {
		t.Fatalf("b resumes from %+v %v", j, err)
	}
	j.Checkpoint = "b/2"
	if err := b.PutJob(cb, j); err != nil {
		t.Fatal(err)
	}
}

// TestEtcdLateCheckpointRefused is the fencing: a daemon that still believes it owns the
// job (its renewals have not noticed yet) writes a checkpoint after its lease was
// revoked and another daemon claimed the job: etcd refuses the write in the same
// transaction, the new owner's record stays, and the old claim is lost.
func TestEtcdLateCheckpointRefused(t *testing.T) {
	const ttl = 6 * time.Second // renewals every 2s: none comes between the revoke and the write
	c, a, b, ca := claimedByA(t, ttl)
	// The client's first renewal goes out within 500ms of the claim, the next a third
	// of the TTL later: revoke between them.
	time.Sleep(700 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Client().Revoke(ctx, ca.etcd.lease); err != nil { // as etcd expires it
		t.Fatal(err)
	}
	cb, err := b.ClaimJob("z", ttl)
	if err != nil {
		t.Fatalf("b's claim after a's lease ended: %v", err)
	}
	defer cb.Release()
	if err := b.PutJob(cb, &Job{ZoneID: "z", State: JobProcessing, Checkpoint: "b/9", Owner: cb.Owner()}); err != nil {
		t.Fatal(err)
	}
	if isClosed(ca.Lost()) {
		t.Fatal("a noticed the revoke before writing: the test does not reach the fencing")
	}
	err = a.PutJob(ca, &Job{ZoneID: "z", State: JobProcessing, Checkpoint: "a/1"})
	if !errors.Is(err, ErrClaimLost) {
		t.Errorf("a's checkpoint after its lease ended: %v, want ErrClaimLost", err)
	}
	if !isClosed(ca.Lost()) {
		t.Error("a's claim is not lost after its write was refused")
	}
	if j, err := b.Job("z"); err != nil || j.Checkpoint != "b/9" {
		t.Errorf("the record after a's late write: %+v %v, want b's checkpoint", j, err)
	}
}

// TestEtcdClaimLostWithoutEtcd: a daemon cut off from etcd gives its claim up before
// etcd can expire it (two thirds of the TTL after the last renewal answered), so it
// stops working before another daemon can claim the job.
func TestEtcdClaimLostWithoutEtcd(t *testing.T) {
	const ttl = 6 * time.Second
	c, _, _, ca := claimedByA(t, ttl)
	defer ca.Release()
	// The first renewal is answered within 500ms of the claim, the next is due a third
	// of the TTL later: cut etcd off in between, 0.5 to 1s after the last answer.
	time.Sleep(time.Second)
	cut := time.Now()
	c.Stop(0)
	defer c.Restart(0)
	select {
	case <-ca.Lost():
		if d := time.Since(cut); d < ttl/3 {
			t.Errorf("lost %v after the cut, before a renewal was missed", d)
		}
		t.Logf("lost %v after the cut", time.Since(cut).Round(10*time.Millisecond))
	case <-time.After(ttl * 2 / 3):
		// etcd may expire the lease a whole TTL after the last renewal it answered
		t.Fatalf("the claim still holds %v after etcd went away (TTL %v)", ttl*2/3, ttl)
	}
}
