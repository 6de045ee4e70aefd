package keystore

import (
	"fmt"
	"slices"
)

// A zone key version's lifecycle: active → retired (never unwrapped again; its wrapped
// material is kept, so `key recover NAME@N` can bring it back if a file on it turns
// up) → purged (its wrapped material destroyed, for good). Records written before
// retire was soft hold retired versions without material: those read as purged.

// VersionOp is a change of a zone key version's state.
type VersionOp string

// The version changes, named as the CLI names them.
const (
	VersionRetire  VersionOp = "retire"
	VersionRecover VersionOp = "recover"
	VersionPurge   VersionOp = "purge"
)

// versionTransitions is the one table of which state each version change leaves from
// and goes to.
var versionTransitions = map[VersionOp]struct{ from, to string }{
	VersionRetire:  {StateActive, StateRetired},
	VersionRecover: {StateRetired, StateActive},
	VersionPurge:   {StateRetired, StatePurged},
}

// VersionState is the version's lifecycle state: active, retired or purged.
func (kv ZoneKeyVersion) VersionState() string {
	switch {
	case kv.State == StatePurged || (kv.State == StateRetired && len(kv.Wrapped) == 0):
		return StatePurged
	case kv.State == StateRetired:
		return StateRetired
	}
	return StateActive
}

// Unwrappable reports whether the version may be unwrapped (by the keyring, a rewrap):
// it is active and holds its wrapped material.
func (kv ZoneKeyVersion) Unwrappable() bool {
	return kv.VersionState() == StateActive && len(kv.Wrapped) > 0
}

// CheckVersionChange is nil when op may change version of zk: the key is active or
// disabled, the version exists and is in op's starting state, and (retire) it is not
// the latest version, which new files use. It is the one place of these rules: the
// daemon asks before its scan, ChangeVersionState in its transaction.
func (z *ZoneKey) CheckVersionChange(op VersionOp, version uint32) error {
	t, ok := versionTransitions[op]
	if !ok {
		return fmt.Errorf("unknown key version operation %q: %w", op, ErrBadInput)
	}
	if st := z.KeyState(); !slices.Contains([]string{StateActive, StateDisabled}, st) {
		return fmt.Errorf("key %q is %s: %w", z.Name, st, ErrKeyState)
	}
	kv, ok := z.Version(version)
	if !ok {
		return fmt.Errorf("key %s@%d: %w", z.Name, version, ErrKeyNotFound)
	}
	if op == VersionRetire && z.Latest().Version == version {
		return fmt.Errorf("%s@%d is the key's latest version (new files use it): roll the key first: %w", z.Name, version, ErrKeyState)
	}
	if st := kv.VersionState(); st != t.from {
		return fmt.Errorf("cannot %s %s@%d: it is %s (only one that is %s): %w", op, z.Name, version, st, t.from, ErrKeyState)
	}
	return nil
}

// ChangeVersionState applies op to name@version in one transaction (the caller has
// made the fresh scan retire and purge need) and returns the key as it is afterwards.
func (s *Store) ChangeVersionState(name string, version uint32, op VersionOp) (*ZoneKey, error) {
	var out *ZoneKey
	err := s.updateZoneKey(name, func(zk *ZoneKey) error {
		if err := zk.CheckVersionChange(op, version); err != nil {
			return err
		}
		for i := range zk.Versions {
			kv := &zk.Versions[i]
			if kv.Version != version {
				continue
			}
			kv.State = versionTransitions[op].to
			if op == VersionPurge {
				kv.Wrapped = nil
			}
		}
		out = zk
		return nil
	})
	return out, err
}
