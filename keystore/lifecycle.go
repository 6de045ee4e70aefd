package keystore

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Zone key lifecycle: active → disabled → deleted (soft, recoverable for a retention
// window) → purged (its wrapped material destroyed; the record stays so the name stays
// reserved). A version's own lifecycle is in versions.go.
const (
	StateDisabled = "disabled"
	StateDeleted  = "deleted"
	StatePurged   = "purged"
)

// Retention windows of a deleted zone key.
const (
	DefaultRetention = 7 * 24 * time.Hour
	MinRetention     = 24 * time.Hour
)

// ErrReserved refuses a new zone key whose name a deleted or purged key keeps.
var ErrReserved = fmt.Errorf("the name is kept by a deleted key: %w", ErrExists)

// LifecycleOp is a change of a zone key's state.
type LifecycleOp string

// The state changes, named as the CLI names them.
const (
	OpDisable LifecycleOp = "disable"
	OpEnable  LifecycleOp = "enable"
	OpDelete  LifecycleOp = "delete"
	OpRecover LifecycleOp = "recover"
	OpPurge   LifecycleOp = "purge"
)

// transitions is the one table of which state each change leaves from and goes to.
// A recovered key comes back disabled (as in cloud KMSs): the operator enables it.
var transitions = map[LifecycleOp]struct {
	from []string
	to   string
}{
	OpDisable: {[]string{StateActive}, StateDisabled},
	OpEnable:  {[]string{StateDisabled}, StateActive},
	OpDelete:  {[]string{StateActive, StateDisabled}, StateDeleted},
	OpRecover: {[]string{StateDeleted}, StateDisabled},
	OpPurge:   {[]string{StateDeleted}, StatePurged},
}

// NextState is the state op takes a key in state from to, or ErrKeyState.
func NextState(op LifecycleOp, from string) (string, error) {
	t, ok := transitions[op]
	if !ok {
		return "", fmt.Errorf("unknown key operation %q: %w", op, ErrBadInput)
	}
	if !slices.Contains(t.from, from) {
		return "", fmt.Errorf("cannot %s a key that is %s (only one that is %s): %w", op, from, strings.Join(t.from, " or "), ErrKeyState)
	}
	return t.to, nil
}

// KeyState is the key's lifecycle state; records without one are active.
func (z *ZoneKey) KeyState() string {
	if z.State == "" {
		return StateActive
	}
	return z.State
}

// LifecycleOptions qualify a state change: Delete's retention (and the smallest one
// allowed), Purge's force (the caller has made the fresh scan), the time it happens.
type LifecycleOptions struct {
	Retention    time.Duration
	MinRetention time.Duration
	Force        bool
	Now          time.Time
}

// WithDefaults fills in what o leaves out: the retention (DefaultRetention), the
// minimum retention (MinRetention), the time (now). It is the one place of these
// defaults.
func (o LifecycleOptions) WithDefaults() LifecycleOptions {
	if o.Retention == 0 {
		o.Retention = DefaultRetention
	}
	if o.MinRetention == 0 {
		o.MinRetention = MinRetention
	}
	if o.Now.IsZero() {
		o.Now = time.Now().UTC()
	}
	return o
}

// ChangeKeyState applies op to zone key name in one transaction and returns the key
// as it is afterwards. Delete is refused while a zone uses the key (ErrInUse, naming
// the zones); Purge before the key's purge date needs Force.
func (s *Store) ChangeKeyState(name string, op LifecycleOp, o LifecycleOptions) (*ZoneKey, error) {
	var out *ZoneKey
	c := s.cache()
	err := s.updateZoneKeyTx(name, func(tx txn, zk *ZoneKey) error {
		out = zk
		return changeKeyTx(tx, zk, op, o.WithDefaults())
	})
	if err != nil {
		return nil, err
	}
	c.states.Store(name, out.KeyState())
	return out, nil
}

// CheckKeyChange reports whether ChangeKeyState(name, op, o) would be allowed now,
// changing nothing: a caller checks before the work that must precede the change (a
// scan, cancelling jobs, flushing caches).
func (s *Store) CheckKeyChange(name string, op LifecycleOp, o LifecycleOptions) error {
	return s.db.View(func(tx txn) error {
		zk, err := zoneKeyTx(tx, name)
		if err != nil {
			return err
		}
		return changeKeyTx(tx, zk, op, o.WithDefaults())
	})
}

// changeKeyTx applies op to zk (not stored yet).
func changeKeyTx(tx txn, zk *ZoneKey, op LifecycleOp, o LifecycleOptions) error {
	to, err := NextState(op, zk.KeyState())
	if err != nil {
		return fmt.Errorf("key %q: %w", zk.Name, err)
	}
	if err := applyChange(tx, zk, op, o); err != nil {
		return err
	}
	zk.State = to
	return nil
}

// applyChange does what op does beyond the state itself.
func applyChange(tx txn, zk *ZoneKey, op LifecycleOp, o LifecycleOptions) error {
	switch op {
	case OpDelete:
		if o.Retention < o.MinRetention {
			return fmt.Errorf("retention %v is shorter than the minimum %v: %w", o.Retention, o.MinRetention, ErrBadInput)
		}
		used, err := zonesUsingTx(tx, zk.Name)
		if err != nil {
			return err
		}
		if len(used) > 0 {
			return fmt.Errorf("key %q is used by zone %s: remove the zone first: %w", zk.Name, strings.Join(used, ", "), ErrInUse)
		}
		after := o.Now.Add(o.Retention)
		zk.Deleted, zk.PurgeAfter = &o.Now, &after
	case OpRecover:
		zk.Deleted, zk.PurgeAfter = nil, nil
	case OpPurge:
		if !o.Force && o.Now.Before(*zk.PurgeAfter) {
			return fmt.Errorf("key %q can be purged after %s (its retention window); before that only with --force: %w",
				zk.Name, zk.PurgeAfter.Format(time.RFC3339), ErrKeyState)
		}
		for i := range zk.Versions {
			zk.Versions[i].Wrapped = nil
		}
		zk.Purged = &o.Now
	}
	return nil
}

// zonesUsingTx lists the paths of the registered zones of key name.
func zonesUsingTx(tx txn, name string) ([]string, error) {
	var out []string
	err := tx.ForEach(bucketZones, nil, func(k, v []byte) error {
		var z Zone
		if err := json.Unmarshal(v, &z); err != nil {
			return fmt.Errorf("keystore record %q: %w", k, err)
		}
		if z.Key == name {
			out = append(out, "/"+z.Path)
		}
		return nil
	})
	slices.Sort(out)
	return out, err
}

// Usable is nil when zone key name may wrap and unwrap: every data request of its
// zones asks, so it answers from memory (one map load) after the first call.
func (s *Store) Usable(name string) error {
	c := s.cache()
	st, ok := c.states.Load(name)
	if !ok {
		zk, err := s.ZoneKey(name)
		if err != nil {
			return nil // no such key: the unwrap says so
		}
		// A state change made meanwhile has stored its state: it wins.
		st, _ = c.states.LoadOrStore(name, zk.KeyState())
	}
	if st != StateActive {
		return fmt.Errorf("key %q is %s: %w", name, st, ErrKeyDisabled)
	}
	return nil
}

// Dependents lists the zone key versions ("name@N") whose wrapped material exists only
// under main key version ref (each version is wrapped under one main key version):
// retiring ref would make them unreadable. A retired version still holds its material
// (it can be recovered) and counts; a purged one holds none.
func (s *Store) Dependents(ref MainRef) ([]string, error) {
	var out []string
	err := s.db.View(func(tx txn) (err error) {
		out, err = dependentsTx(tx, ref)
		return err
	})
	return out, err
}

// dependentsTx is Dependents in tx.
func dependentsTx(tx txn, ref MainRef) ([]string, error) {
	var out []string
	err := tx.ForEach(bucketZoneKeys, nil, func(k, v []byte) error {
		var zk ZoneKey
		if err := json.Unmarshal(v, &zk); err != nil {
			return fmt.Errorf("keystore record %q: %w", k, err)
		}
		for _, kv := range zk.Versions {
			if kv.Main() == ref && len(kv.Wrapped) > 0 {
				out = append(out, fmt.Sprintf("%s@%d", zk.Name, kv.Version))
			}
		}
		return nil
	})
	return out, err
}
