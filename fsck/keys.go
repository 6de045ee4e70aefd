package fsck

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/ezfs/ezfs/crypto"
	"github.com/ezfs/ezfs/keystore"
	"github.com/ezfs/ezfs/zones"
)

// verRef names a zone key version.
type verRef struct {
	name    string
	version uint32
}

func (r verRef) String() string { return fmt.Sprintf("%s@%d", r.name, r.version) }

// versions unwraps each zone key version the files need once for the run (the keyring
// keeps it), and remembers what it found.
type versions struct {
	keys  *zones.Keys
	mu    sync.Mutex
	state map[verRef]*verState // guarded by mu
}

// verState is what unwrapping a version gave.
type verState struct {
	once sync.Once
	// missing: the keystore has no such version; unreadable: it may never be
	// unwrapped (retired, purged: why), each file is bad-edek; notChecked: its key is
	// disabled or deleted (why), its files are counted, not checked; broken: it does
	// not unwrap to a valid key (why); fatal: the provider could not be asked (the
	// run stops).
	missing    bool
	unreadable string
	notChecked string
	broken     string
	fatal      error
}

func newVersions(keys *zones.Keys) *versions {
	return &versions{keys: keys, state: map[verRef]*verState{}}
}

// ready unwraps ref, the first time only.
func (v *versions) ready(ctx context.Context, ref verRef) *verState {
	v.mu.Lock()
	s := v.state[ref]
	if s == nil {
		s = &verState{}
		v.state[ref] = s
	}
	v.mu.Unlock()
	s.once.Do(func() { v.unwrap(ctx, ref, s) })
	return s
}

func (v *versions) unwrap(ctx context.Context, ref verRef, s *verState) {
	zk, err := v.keys.Ring.Store().ZoneKey(ref.name)
	if errors.Is(err, keystore.ErrKeyNotFound) {
		s.missing = true
		return
	}
	if err != nil {
		s.fatal = err
		return
	}
	kv, ok := zk.Version(ref.version)
	if !ok {
		s.missing = true
		return
	}
	if s.unreadable, s.notChecked = byState(zk, kv, ref); s.unreadable != "" || s.notChecked != "" {
		return
	}
	err = v.keys.Ring.WithZoneKey(ctx, ref.name, ref.version, func([]byte) error { return nil })
	switch {
	case err == nil:
	case errors.Is(err, keystore.ErrInvalidCiphertext) || errors.Is(err, crypto.ErrFormat) || errors.Is(err, crypto.ErrAuth):
		s.broken = err.Error()
	default:
		s.fatal = fmt.Errorf("could not unwrap zone key %s: %w", ref, err)
	}
}

// byState judges version kv of zk by the states the keystore records, before any
// unwrap (the keyring refuses a key that is not active). A retired version (its
// material kept or not) or a purged key may never be unwrapped again: its files are
// unreadable, a problem each. A disabled or deleted key is not unwrapped: fsck does
// not turn a key on that the operator turned off; its files are not checked.
func byState(zk *keystore.ZoneKey, kv keystore.ZoneKeyVersion, ref verRef) (unreadable, notChecked string) {
	switch st := zk.KeyState(); {
	case st == keystore.StatePurged:
		return fmt.Sprintf("key %s, which is purged: its material is destroyed", ref.name), ""
	case kv.VersionState() == keystore.StateRetired:
		return fmt.Sprintf("%s, which is retired: its material is kept but never unwrapped (key recover %s brings it back)", ref, ref), ""
	case kv.VersionState() == keystore.StatePurged:
		return fmt.Sprintf("%s, which is retired and its material destroyed", ref), ""
	case len(kv.Wrapped) == 0:
		return fmt.Sprintf("%s (%s), which holds no wrapped material", ref, kv.State), ""
	case st != keystore.StateActive:
		return "", fmt.Sprintf("key %s is %s", ref.name, st)
	}
	return "", ""
}

// unwrapped counts the versions unwrapped, and returns the broken ones as problems.
func (v *versions) outcome() (int, []Problem) {
	v.mu.Lock()
	defer v.mu.Unlock()
	n := 0
	var ps []Problem
	for ref, s := range v.state {
		switch {
		case s.broken != "":
			ps = append(ps, Problem{Kind: KindZoneKey, Key: ref.String(), Detail: "does not unwrap: " + s.broken + "; its files were not checked"})
		case !s.missing && s.fatal == nil && s.unreadable == "" && s.notChecked == "":
			n++
		}
	}
	return n, ps
}

// checkKeys reports the keys of the keystore with the files on each version, the
// zones whose key is missing, keys no zone uses and versions no file uses.
func (c *checker) checkKeys() error {
	zks, err := c.store.ZoneKeys()
	if err != nil {
		return err
	}
	n, broken := c.keys.outcome()
	c.rep.Unwraps = n
	for _, p := range broken {
		c.problem(p)
	}
	used := map[verRef]int64{}
	zonesOf := map[string][]string{}
	walkedAll := map[string]bool{}
	for _, z := range c.zones {
		zonesOf[z.rec.Key] = append(zonesOf[z.rec.Key], "/"+z.rec.Path)
		if _, ok := walkedAll[z.rec.Key]; !ok {
			walkedAll[z.rec.Key] = true
		}
		walkedAll[z.rec.Key] = walkedAll[z.rec.Key] && z.walk
		for ref, k := range z.used {
			used[ref] += k
		}
	}
	have := map[string]bool{}
	for _, zk := range zks {
		have[zk.Name] = true
		c.rep.Keys = append(c.rep.Keys, c.keyReport(zk, zonesOf[zk.Name], used, walkedAll[zk.Name]))
	}
	for _, z := range c.zones {
		if !have[z.rec.Key] {
			c.problem(Problem{Kind: KindZoneKey, Path: z.rec.Path, Zone: z.rec.Path, Key: z.rec.Key,
				Detail: fmt.Sprintf("the zone's key %q is not in the keystore", z.rec.Key)})
		}
	}
	return nil
}

// keyReport counts the files on each version of zk and reports what no one uses. A
// key's newest version with no file is normal (right after a roll); an older active
// one no file references can be retired. Versions are judged only when every zone of
// the key was walked; a deleted or purged key is never unused.
func (c *checker) keyReport(zk *keystore.ZoneKey, zoneList []string, used map[verRef]int64, walked bool) KeyReport {
	sort.Strings(zoneList)
	kr := KeyReport{Name: zk.Name, State: zk.KeyState(), Zones: zoneList}
	// A deleted or purged key is kept on purpose (recoverable, or its name reserved):
	// its state is in the report, and nothing about it is a problem.
	gone := kr.State == keystore.StateDeleted || kr.State == keystore.StatePurged
	if kr.Zones == nil {
		kr.Zones = []string{}
	}
	latest := zk.Latest().Version
	for _, kv := range zk.Versions {
		ref := verRef{zk.Name, kv.Version}
		vr := VersionReport{Version: kv.Version, State: kv.State, Latest: kv.Version == latest,
			MainKey: kv.Main().String(), Files: used[ref]}
		kr.Versions = append(kr.Versions, vr)
		if !gone && len(zoneList) > 0 && walked && !vr.Latest && vr.Files == 0 && kv.State == keystore.StateActive {
			c.problem(Problem{Kind: KindUnusedVersion, Key: ref.String(),
				Detail: fmt.Sprintf("no file references it (newest is %s@%d): it can be retired", zk.Name, latest)})
		}
	}
	if !gone && len(zoneList) == 0 {
		c.problem(Problem{Kind: KindUnusedKey, Key: zk.Name, Detail: "no zone uses this key"})
	}
	return kr
}
