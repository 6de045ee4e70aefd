package keystore

import (
	"errors"
	"testing"
	"time"
)

// TestPolicyDue: the due time is the newest version's time plus the period, so a key
// overdue by many periods is due once and, rolled, not due again for a period.
func TestPolicyDue(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	hour := &Policy{Every: time.Hour}
	key := func(p *Policy, created ...time.Time) *ZoneKey {
		zk := &ZoneKey{Name: "k", Policy: p}
		for i, c := range created {
			zk.Versions = append(zk.Versions, ZoneKeyVersion{Version: uint32(i + 1), Created: c})
		}
		return zk
	}
	for _, c := range []struct {
		name    string
		zk      *ZoneKey
		now     time.Time
		wantDue time.Time // zero: no policy
		due     bool
	}{
		{"no policy", key(nil, t0), t0.Add(100 * time.Hour), time.Time{}, false},
		{"zero period", key(&Policy{}, t0), t0.Add(100 * time.Hour), time.Time{}, false},
		{"not due", key(hour, t0), t0.Add(59 * time.Minute), t0.Add(time.Hour), false},
		{"due on the dot", key(hour, t0), t0.Add(time.Hour), t0.Add(time.Hour), true},
		{"due", key(hour, t0), t0.Add(61 * time.Minute), t0.Add(time.Hour), true},
		{"overdue by many periods", key(hour, t0), t0.Add(1000 * time.Hour), t0.Add(time.Hour), true},
		{"newest version counts", key(hour, t0, t0.Add(30*time.Minute)), t0.Add(time.Hour), t0.Add(90 * time.Minute), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			due, ok := c.zk.NextDue(0)
			if ok != !c.wantDue.IsZero() || !due.Equal(c.wantDue) {
				t.Errorf("NextDue = %v %v, want %v", due, ok, c.wantDue)
			}
			if got := c.zk.Due(c.now, 0); got != c.due {
				t.Errorf("Due(%v) = %v, want %v", c.now, got, c.due)
			}
			if !c.due {
				return
			}
			// Rolled at now: one more version, and not due again before a period.
			c.zk.Versions = append(c.zk.Versions, ZoneKeyVersion{Version: uint32(len(c.zk.Versions) + 1), Created: c.now})
			if c.zk.Due(c.now, 0) || c.zk.Due(c.now.Add(c.zk.Policy.Every-time.Second), 0) {
				t.Errorf("due again after the roll at %v", c.now)
			}
			if !c.zk.Due(c.now.Add(c.zk.Policy.Every), 0) {
				t.Errorf("not due a period after the roll")
			}
		})
	}
}

func TestSetPolicy(t *testing.T) {
	s, _ := newStore(t)
	if _, err := s.CreateZoneKey("k", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetPolicy("k", &Policy{Every: time.Second}, time.Minute); !errors.Is(err, ErrBadInput) {
		t.Errorf("period below the minimum: %v", err)
	}
	if _, err := s.SetPolicy("nope", &Policy{Every: time.Hour}, time.Minute); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("policy of a missing key: %v", err)
	}
	if _, err := s.SetPolicy("k", &Policy{Every: time.Hour, Reencrypt: true}, time.Minute); err != nil {
		t.Fatal(err)
	}
	zk, err := s.ZoneKey("k")
	if err != nil || zk.Policy == nil || zk.Policy.Every != time.Hour || !zk.Policy.Reencrypt {
		t.Fatalf("stored policy: %v %+v", err, zk.Policy)
	}
	// A roll keeps the policy.
	if zk, err = s.RollZoneKey("k"); err != nil || zk.Policy == nil {
		t.Fatalf("policy after a roll: %v %+v", err, zk)
	}
	if _, err := s.SetPolicy("k", nil, time.Minute); err != nil {
		t.Fatal(err)
	}
	if zk, _ = s.ZoneKey("k"); zk.Policy != nil {
		t.Errorf("cleared policy: %+v", zk.Policy)
	}
}

// TestPolicyDueMinimum: a period below the daemon's minimum (set by a mount that
// allowed it) counts as the minimum.
func TestPolicyDueMinimum(t *testing.T) {
	v := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	zk := &ZoneKey{Versions: []ZoneKeyVersion{{Version: 1, Created: v}}, Policy: &Policy{Every: time.Second}}
	if due, ok := zk.NextDue(time.Hour); !ok || !due.Equal(v.Add(time.Hour)) {
		t.Errorf("NextDue under a 1h minimum: %v %v, want %v", due, ok, v.Add(time.Hour))
	}
	if zk.Due(v.Add(time.Minute), time.Hour) || !zk.Due(v.Add(time.Hour), time.Hour) {
		t.Error("Due ignores the minimum")
	}
}
