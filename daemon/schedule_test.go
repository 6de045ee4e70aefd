package daemon

import (
	"bytes"
	"context"
	"log"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ezfs/ezfs/control"
	"github.com/ezfs/ezfs/keystore"
	"github.com/ezfs/ezfs/zones"
)

// TestScheduledRollProviderDown: a key whose main key's provider does not answer is
// not rolled; the failure is logged, audited and kept for a retry a period later, and
// the other due key is rolled all the same.
func TestScheduledRollProviderDown(t *testing.T) {
	dir := t.TempDir()
	if _, err := keystore.InitSystem(dir, []byte("pw")); err != nil {
		t.Fatal(err)
	}
	store, err := keystore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	down, err := keystore.NewSystemMainKey([]byte("pw"), "down", 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.AddMainKey(down); err != nil {
		t.Fatal(err)
	}
	mks, err := store.MainKeys()
	if err != nil {
		t.Fatal(err)
	}
	sys, err := keystore.UnlockSystem(mks, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	open := func(ctx context.Context, mk *keystore.MainKey) (keystore.Provider, error) {
		if mk.Name == "down" {
			return nil, keystore.ErrUnavailable
		}
		return sys, nil
	}
	audit, err := keystore.OpenAudit(dir)
	if err != nil {
		t.Fatal(err)
	}
	ring := keystore.NewKeyringOpener(store, open, audit, time.Minute)
	defer ring.Close()
	var logged bytes.Buffer
	d := &daemon{store: store, ring: ring, audit: audit, log: log.New(&logged, "", 0), registry: zones.NewRegistry()}
	d.sched = newScheduler(d, time.Second)
	// "a" (first in key order) fails; "b" must be rolled anyway.
	for name, main := range map[string]string{"a": "down", "b": ""} {
		if _, err := store.CreateZoneKey(name, main); err != nil {
			t.Fatal(err)
		}
		if _, err := d.keyPolicy(control.KeyPolicyArgs{Name: name, RotateEvery: 10 * time.Second}); err != nil {
			t.Fatal(err)
		}
	}
	versions := func(name string) int {
		zk, err := store.ZoneKey(name)
		if err != nil {
			t.Fatal(err)
		}
		return len(zk.Versions)
	}
	at := time.Now().Add(11 * time.Second)
	next := d.sched.rollDue(at)
	if versions("a") != 1 || versions("b") != 2 {
		t.Fatalf("after the due time: a has %d versions, b %d; want 1 and 2", versions("a"), versions("b"))
	}
	if b, _ := store.ZoneKey("b"); !next.Equal(b.Latest().Created.Add(10 * time.Second)) {
		t.Errorf("next wake-up %v, want b's next due time (before a's retry)", next)
	}
	// With b out of the way: a is not retried before its time, and then it is.
	if _, err := d.keyPolicy(control.KeyPolicyArgs{Name: "b"}); err != nil {
		t.Fatal(err)
	}
	if next = d.sched.rollDue(at.Add(9 * time.Second)); !next.Equal(at.Add(10 * time.Second)) {
		t.Errorf("next wake-up %v, want a's retry a period after the failure", next)
	}
	if n := len(strings.Split(strings.TrimSpace(logged.String()), "\n")); n != 2 || !strings.Contains(logged.String(), "WARNING: scheduled roll of key a failed") {
		t.Errorf("log after one failure and an early look:\n%s", logged.String())
	}
	zk, _ := store.ZoneKey("a")
	var ki control.KeyInfo
	d.policyInfo(zk, &ki)
	if !strings.Contains(ki.RotationError, "does not answer") || ki.NextRotation == nil || !ki.NextRotation.Equal(next) {
		t.Errorf("describe of a: error %q, next %v", ki.RotationError, ki.NextRotation)
	}
	d.sched.rollDue(at.Add(10 * time.Second))
	if !strings.Contains(logged.String(), "tried again at") || strings.Count(logged.String(), "WARNING") != 2 {
		t.Errorf("no retry at its time:\n%s", logged.String())
	}
	if err := audit.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, keystore.AuditFile))
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(raw, []byte(`"by":"policy","due"`)); n != 3 {
		t.Errorf("%d scheduled rolls audited, want 3 (a twice, failed; b once):\n%s", n, raw)
	}
}
