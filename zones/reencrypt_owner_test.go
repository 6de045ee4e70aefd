package zones_test

import (
	"context"
	"testing"
	"time"

	"github.com/ezfs/ezfs/fs"
	"github.com/ezfs/ezfs/keystore"
	"github.com/ezfs/ezfs/keystore/etcdtest"
	"github.com/ezfs/ezfs/zones"
	"github.com/ezfs/ezfs/zones/zonetest"
)

// eventually fails unless cond holds within d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
	}
}

// TestReencryptStopsWhenItsClaimIsLost: a job on an etcd keystore whose ownership
// lease etcd ends (as when this daemon was cut off for its TTL) stops at once and
// writes its record no more; the look for jobs without an owner takes it over from its
// checkpoint and completes it.
func TestReencryptStopsWhenItsClaimIsLost(t *testing.T) {
	c := etcdtest.Start(t, 1)
	t.Setenv(keystore.EnvLogDir, t.TempDir())
	fx := zonetest.NewAt(t, "k", c.Location("zones-test/claim"))
	const n = 300 // 7.5s a pass at 40 files/s: it runs on well after the lease ends
	fx.AddFiles(t, n, []byte("contents"))
	if _, err := fx.Store.RollZoneKey("k"); err != nil {
		t.Fatal(err)
	}
	reg := zones.NewRegistry()
	reg.Add(zones.Entry{Zone: fx.Zone, Path: fx.ZonePath})
	fsys, err := fs.New(fs.Options{Backing: fx.Backing, Keys: fx.Keys, Zones: reg})
	if err != nil {
		t.Fatal(err)
	}
	r := zones.NewReencryptor(fsys.Root(), fx.Keys, fsys, nil, testLogger(t))
	r.Lease = 3 * time.Second
	defer r.Close()
	if _, err := r.Start(*reg.At(fx.ZonePath), 40); err != nil {
		t.Fatal(err)
	}
	id := fx.Zone.IDString()
	job := func() zones.JobInfo {
		t.Helper()
		jobs, err := r.Jobs()
		if err != nil || len(jobs) != 1 {
			t.Fatalf("jobs: %+v %v", jobs, err)
		}
		return jobs[0]
	}
	stored := func() *keystore.Job {
		t.Helper()
		j, err := fx.Store.Job(id)
		if err != nil || j == nil {
			t.Fatalf("job record: %+v %v", j, err)
		}
		return j
	}
	eventually(t, 5*time.Second, "a checkpoint", func() bool { return stored().Checkpoint != "" })
	me := job().Owner
	if me == "" || stored().Owner != me {
		t.Fatalf("owner while running: %q, recorded %q", me, stored().Owner)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cli := c.Client()
	leases, err := cli.Leases(ctx)
	if err != nil || len(leases.Leases) != 1 {
		t.Fatalf("leases: %+v %v, want the job's only", leases, err)
	}
	if _, err := cli.Revoke(ctx, leases.Leases[0].ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "the run stopped after its lease ended", func() bool { return job().Owner == "" })
	if j := job(); j.State != keystore.JobProcessing {
		t.Fatalf("job after its claim was lost: %+v", j)
	}
	before := stored()
	time.Sleep(2500 * time.Millisecond) // more than a checkpoint's period
	if after := stored(); after.Checkpoint != before.Checkpoint || after.Scanned != before.Scanned {
		t.Errorf("the record changed after the run stopped: %q (%d) then %q (%d)", before.Checkpoint, before.Scanned, after.Checkpoint, after.Scanned)
	}

	if err := r.Adopt(reg); err != nil {
		t.Fatal(err)
	}
	if j := job(); j.Owner != me || j.State != keystore.JobProcessing {
		t.Fatalf("after the look for jobs without an owner: %+v", j)
	}
	eventually(t, 30*time.Second, "the job's end", func() bool { j := job(); return !j.Active() })
	if j := job(); j.State != keystore.JobCompleted || j.Files != n || j.Failures != 0 || j.Versions[2] != n {
		t.Errorf("job at its end: %+v", j)
	}
}
