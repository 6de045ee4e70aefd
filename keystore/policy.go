package keystore

import (
	"fmt"
	"time"
)

// Policy is a zone key's rotation schedule: the daemon rolls the key when its newest
// version is Every old, and with Reencrypt starts reencryption on the key's zones
// after the roll. Stored in the zone key's record; a record without one has none.
type Policy struct {
	// Every is the rotation period (JSON: nanoseconds, as time.Duration counts).
	Every     time.Duration `json:"rotate_every"`
	Reencrypt bool          `json:"reencrypt,omitempty"`
	// Set is when the policy was last set.
	Set time.Time `json:"set"`
}

// String describes the policy for display.
func (p *Policy) String() string {
	if p == nil {
		return "none"
	}
	s := "rotate every " + p.Every.String()
	if p.Reencrypt {
		s += ", then reencrypt its zones"
	}
	return s
}

// NextDue is when zone key z is due to be rolled by its policy: the time of its
// newest version plus the period, or min if the period is shorter (a policy set under
// a lower minimum, by a test's mount, does not roll faster than this daemon allows).
// ok is false for a key without a policy. A key down for many periods is due once: a
// roll makes a new newest version, and the next due time counts from it, not from
// the missed periods.
func (z *ZoneKey) NextDue(min time.Duration) (due time.Time, ok bool) {
	if z.Policy == nil || z.Policy.Every <= 0 || len(z.Versions) == 0 {
		return time.Time{}, false
	}
	return z.Latest().Created.Add(max(z.Policy.Every, min)), true
}

// Due reports whether zone key z is to be rolled at now by its policy (NextDue).
func (z *ZoneKey) Due(now time.Time, min time.Duration) bool {
	due, ok := z.NextDue(min)
	return ok && !now.Before(due)
}

// SetPolicy replaces the rotation policy of zone key name; nil clears it. Periods
// below min are refused (the daemon's minimum, so a typo cannot roll a key every
// second).
func (s *Store) SetPolicy(name string, p *Policy, min time.Duration) (*ZoneKey, error) {
	if p != nil && p.Every < min {
		return nil, fmt.Errorf("rotation period %v is below the minimum of %v: %w", p.Every, min, ErrBadInput)
	}
	var out *ZoneKey
	err := s.updateZoneKey(name, func(zk *ZoneKey) error {
		zk.Policy = p
		out = zk
		return nil
	})
	return out, err
}
