package integration

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ezfs/ezfs/control"
	"github.com/ezfs/ezfs/keystore"
	"github.com/ezfs/ezfs/keystore/etcdtest"
)

// ownerOf is the job owner name of the daemon serving e.
func (e *env) ownerOf() string {
	e.t.Helper()
	host, err := os.Hostname()
	if err != nil {
		e.t.Fatal(err)
	}
	return fmt.Sprintf("%s:%d", host, e.daemonPID())
}

// TestReencryptTakeover (issue 17, criterion 3): two daemons, one backing directory
// (-o sharedstorage) and one etcd keystore. A reencryption job started on a with a rate
// limit shows a as its owner on both hosts (b refuses to start or cancel it, naming a);
// a is killed (SIGKILL) mid-job; b takes the
// job over from its checkpoint within the lease TTL (and the period of its look for
// jobs without an owner), shows itself as the owner while it runs, and completes it:
// every file is on the target version and reads as written. a, mounted again, finds
// the job b owns and leaves it to b.
func TestReencryptTakeover(t *testing.T) {
	const lease, n = 3 * time.Second, 300
	t.Setenv(keystore.JobLeaseEnv, lease.String()) // both daemons' lease
	a, b := etcdPair(t, etcdtest.Start(t, 1), "ezfs-it/takeover")
	zone := a.zone("z", "k")
	if within(t, 5*followWithin, "b serves the zone made through a", func() error { return hasZone(b, "/z") }); t.Failed() {
		t.FailNow()
	}
	sums := fill(t, zone, n)
	zoneB := on(a, b, zone)
	a.run("key", "roll", "--mount", a.mnt, "k")
	a.run("reencrypt", "start", "--rate", "50", zone)
	ownerA, ownerB := a.ownerOf(), b.ownerOf()

	// a runs it, and b sees so from the job's record, once a checkpoint is there.
	deadline := time.Now().Add(10 * time.Second)
	for j := b.job(zoneB); j.Checkpoint == "" || j.Reencrypted < 50; j = b.job(zoneB) {
		if j.Owner != ownerA || (j.State != "Processing" && j.State != "Submitted") {
			t.Fatalf("b shows the job %s owned by %q, want running on %s", j.State, j.Owner, ownerA)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint of a's job in 10s: %+v", j)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if j := a.job(zone); j.Owner != ownerA {
		t.Errorf("a shows owner %q, want %s", j.Owner, ownerA)
	}
	// b neither starts a second job on the zone nor cancels a's: both say who runs it.
	failsCode(t, nil, control.CodeBusy, ownerA, "reencrypt", "start", zoneB)
	failsCode(t, nil, control.CodeBusy, "cancel it through that host", "reencrypt", "cancel", zoneB)

	killed := time.Now()
	a.killPID(a.daemonPID())
	deadline = killed.Add(lease + lease/4 + 2*time.Second) // the TTL, b's look period, a margin
	j := b.job(zoneB)
	for ; j.Owner != ownerB; j = b.job(zoneB) {
		if time.Now().After(deadline) {
			t.Fatalf("b did not take the job over %v after a was killed (lease %v): %+v", time.Since(killed), lease, j)
		}
		if j.State != "Processing" {
			t.Fatalf("the job is %s before b took it over: %+v", j.State, j)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("b took the job over %v after a was killed, at %q (%d re-encrypted)", time.Since(killed).Round(10*time.Millisecond), j.Checkpoint, j.Reencrypted)
	if j.State != "Processing" {
		t.Errorf("the job was not running when b showed itself as its owner: %+v", j)
	}
	if out := b.run("reencrypt", "status", zoneB); !strings.Contains(out, "owner:") || !strings.Contains(out, ownerB) {
		t.Errorf("status text on b does not show the owner %s:\n%s", ownerB, out)
	}

	// a mounts again meanwhile: it shows b as the owner and does not take the job.
	a.mount()
	if j := a.job(zone); j.State == "Processing" && j.Owner != ownerB {
		t.Errorf("a, mounted again, shows owner %q of the running job, want %s", j.Owner, ownerB)
	}

	j = b.waitJob(zoneB)
	if j.State != "Completed" || j.Failures != 0 || j.Owner != ownerB || j.Files != n || j.Reencrypted+j.AlreadyCurrent != n {
		t.Errorf("the job at its end: %+v", j)
	}
	if j := a.job(zone); j.State != "Completed" || j.Owner != ownerB {
		t.Errorf("a shows the ended job as %s by %q, want Completed by %s", j.State, j.Owner, ownerB)
	}
	b.checkZone(zoneB, sums, 2)
}
