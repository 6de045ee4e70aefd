package daemon

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ezfs/ezfs/crypto"
	"github.com/ezfs/ezfs/keystore"
	"github.com/ezfs/ezfs/zones"
)

// The daemon follows its keystore. Whatever changes it, an admin command of this
// daemon or another host's daemon on the same etcd keystore, ends in applyKeystore,
// which compares the keystore with what the daemon last applied (its view) and does
// what each difference needs, the same for a change made here and one made elsewhere:
//
//   - a zone key that stops being active (disabled, deleted, purged): keyStopped;
//   - a key active again: its zones serve (the Store's state cache said so already);
//   - a version that stops unwrapping (retired, purged): its material is zeroed;
//   - a main key version retired: its provider instance is closed;
//   - zones created, moved or removed: the zone registry follows (applyZones);
//   - any change: the rotation scheduler reads the policies again.
//
// Each key's newest version (new files) and lifecycle state (every request) are the
// Store's caches, which Store.Watch drops before it signals; applyKeystore fills them
// again for the keys of this mount's zones, so that they keep serving while etcd
// does not answer.

// keystoreView is what the daemon last applied of the keystore.
type keystoreView struct {
	keys  map[string]keyView
	mains map[keystore.MainRef]string // state
	zones map[string]*keystore.Zone   // by zone ID
}

// keyView is a zone key's state and, per version, whether it unwraps and its state.
type keyView struct {
	state    string
	versions map[uint32]versionView
}

type versionView struct {
	state      string
	unwrapping bool
}

// keySync is the daemon's following of the keystore.
type keySync struct {
	mu   sync.Mutex    // serialises applyKeystore
	view *keystoreView // guarded by mu; nil before the first apply
	kick chan struct{} // a change to apply (buffered, 1)
}

// startWatch applies the keystore once, which fills the zone registry the mount
// starts with, and then follows it: Store.Watch (etcd) signals every change made by
// anyone; with a bbolt file this daemon is the only writer, and its admin commands
// apply their own changes (changed). It returns the function that stops following.
func (d *daemon) startWatch() (stop func(), err error) {
	d.follow.kick = make(chan struct{}, 1)
	if err := d.applyKeystore(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		err := d.store.Watch(ctx, d.changed)
		if err != nil && ctx.Err() == nil {
			d.log.Printf("WARNING: the keystore watch ended: %v; changes made through other hosts are not followed until the next mount", err)
		}
	}()
	go func() {
		defer wg.Done()
		d.followKeystore(ctx)
	}()
	return func() { cancel(); wg.Wait() }, nil
}

// changed asks for the keystore to be applied again (a change was made).
func (d *daemon) changed() {
	select {
	case d.follow.kick <- struct{}{}:
	default: // one is pending: it reads what this change wrote
	}
}

// applyChange applies the keystore after a change this daemon made, at once, so
// that the admin command returns with its effect in place; if the keystore cannot be
// read now, followKeystore tries again.
func (d *daemon) applyChange() {
	if err := d.applyKeystore(); err != nil {
		d.changed()
	}
}

// followKeystore applies the keystore after every change signalled; an attempt that
// cannot read it (etcd went away right after the change) is made again every second
// until one succeeds.
func (d *daemon) followKeystore(ctx context.Context) {
	var retry <-chan time.Time
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.follow.kick:
		case <-retry:
		}
		retry = nil
		if err := d.applyKeystore(); err != nil {
			if !failing {
				d.log.Printf("WARNING: the keystore changed, but it cannot be read to follow the change: %v (tried again every second)", err)
			}
			failing = true
			retry = time.After(time.Second)
			continue
		}
		if failing {
			d.log.Printf("the keystore answers again: its changes are applied")
		}
		failing = false
	}
}

// applyKeystore brings the daemon to what the keystore holds now (see above). The
// first apply only records the view, and registers the zones.
func (d *daemon) applyKeystore() error {
	d.follow.mu.Lock()
	defer d.follow.mu.Unlock()
	next, err := d.readView()
	if err != nil {
		return err
	}
	prev := d.follow.view
	first := prev == nil
	if first {
		prev = &keystoreView{}
	} else {
		d.applyKeys(prev, next)
		d.applyMains(prev, next)
	}
	if err := d.applyZones(prev.zones, next.zones, first); err != nil {
		return err
	}
	d.follow.view = next
	d.warmCaches()
	d.sched.rearm() // a policy may have changed
	return nil
}

// readView reads what applyKeystore compares.
func (d *daemon) readView() (*keystoreView, error) {
	zks, err := d.store.ZoneKeys()
	if err != nil {
		return nil, err
	}
	mks, err := d.store.MainKeys()
	if err != nil {
		return nil, err
	}
	zs, err := d.store.Zones()
	if err != nil {
		return nil, err
	}
	v := &keystoreView{keys: map[string]keyView{}, mains: map[keystore.MainRef]string{}, zones: map[string]*keystore.Zone{}}
	for _, zk := range zks {
		kv := keyView{state: zk.KeyState(), versions: map[uint32]versionView{}}
		for _, ver := range zk.Versions {
			kv.versions[ver.Version] = versionView{state: ver.VersionState(), unwrapping: ver.Unwrappable()}
		}
		v.keys[zk.Name] = kv
	}
	for _, mk := range mks {
		v.mains[mk.Ref()] = mk.State
	}
	for _, z := range zs {
		v.zones[z.ID] = z
	}
	return v, nil
}

// applyKeys applies the changes of zone key and version states. A key or version
// the view does not have (made since, or by a change whose view was not applied)
// counts as active before, so that one found stopped is stopped here too.
func (d *daemon) applyKeys(prev, next *keystoreView) {
	for name, cur := range next.keys {
		old, known := prev.keys[name]
		if !known {
			old.state = keystore.StateActive
		}
		wasActive, isActive := old.state == keystore.StateActive, cur.state == keystore.StateActive
		switch {
		case wasActive && !isActive:
			d.keyStopped(name, cur.state)
		case !wasActive && isActive:
			d.log.Printf("zone key %s is active again: its zones serve", name)
		}
		for v, nv := range cur.versions {
			ov, vknown := old.versions[v]
			if !vknown {
				ov = versionView{state: keystore.StateActive, unwrapping: true}
			}
			if nv == ov {
				continue
			}
			if ov.unwrapping && !nv.unwrapping {
				d.ring.Forget(name, v)
			}
			d.log.Printf("zone key version %s@%d is %s", name, v, nv.state)
		}
	}
	for name := range prev.keys {
		if _, ok := next.keys[name]; !ok {
			d.keyStopped(name, "gone from the keystore")
		}
	}
}

// keyStopped stops zone key name, which is no longer active (state): its
// reencryption jobs here are cancelled, its cached unwrapped versions zeroed, and the
// kernel drops the cached pages of its zones' open files, so that every request of
// its zones is refused from then on (EACCES), open files included.
func (d *daemon) keyStopped(name, state string) {
	why := fmt.Sprintf("zone key %s is %s: start it again after 'ezfs key enable %s'", name, state, name)
	d.reenc.CancelKey(name, why)
	d.ring.Forget(name, 0)
	n := d.fsys.DropKeyCaches(name)
	d.log.Printf("zone key %s is %s: its zones answer EACCES (cached pages of %d files dropped)", name, state, n)
}

// applyMains closes the provider instances of main key versions no longer active.
func (d *daemon) applyMains(prev, next *keystoreView) {
	for ref, st := range prev.mains {
		if st == keystore.StateActive && next.mains[ref] != keystore.StateActive {
			if err := d.ring.Drop(ref); err != nil {
				d.log.Printf("close the provider of main key %s: %v", ref, err)
			}
		}
	}
}

// warmCaches fills the Store's caches of the keys of this mount's zones (newest
// version, state) right after a change dropped them, so that they serve from memory
// while etcd does not answer. A key that cannot be read now is read at its next use.
func (d *daemon) warmCaches() {
	seen := map[string]bool{}
	for _, e := range d.registry.List() {
		if name := e.Zone.Key; !seen[name] {
			seen[name] = true
			_ = d.store.Usable(name)
			_, _ = d.store.LatestVersion(name)
		}
	}
}

// applyZones makes the zone registry follow the zone records: zones made, moved or
// removed through another host (or this one: then the registry has them already).
// first is the mount's first apply, which registers every zone (locateZone).
func (d *daemon) applyZones(prev, next map[string]*keystore.Zone, first bool) error {
	for id, z := range next {
		old := prev[id]
		switch {
		case old == nil && d.registry.ByID(mustID(id)) != nil:
			// Made through this daemon, which registered it.
		case old == nil:
			e, err := d.locateZone(z, first)
			if err != nil && first {
				return err
			}
			if err != nil {
				d.log.Printf("zone %s made through another host: %v", z.ID, err)
				continue
			}
			d.registry.Add(e)
			if !first {
				d.log.Printf("zone %s (key %s) at /%s: made through another host, served", z.ID, z.Key, z.Path)
			}
		case old.Path != z.Path:
			if e := d.registry.ByID(mustID(z.ID)); e != nil && e.Path != z.Path {
				e.Path = z.Path
				d.registry.Add(*e)
			}
		}
	}
	for id, z := range prev {
		if next[id] == nil && d.registry.ByID(mustID(id)) != nil {
			d.registry.Remove(mustID(id))
			d.log.Printf("zone %s (key %s) at /%s was removed", id, z.Key, z.Path)
		}
	}
	return nil
}

// mustID is a zone ID the registry holds (it parsed when registered); a bad one is
// the zero ID, which no zone has.
func mustID(s string) crypto.ZoneID {
	id, _ := zones.ParseID(s)
	return id
}

// locateZone is the registry entry of zone record z, found where the keystore has
// it. A root found there with its marker gives the zone its inode here (on a shared
// disk each host sees its own device number; at the mount, save records it: a record
// from before inodes were kept, or a backing dir restored from a copy, whose inodes are
// new); one not found, or found without its marker, is registered as the keystore has
// it and served as damaged (zone.go in fs).
func (d *daemon) locateZone(z *keystore.Zone, save bool) (zones.Entry, error) {
	id, err := zones.ParseID(z.ID)
	if err != nil {
		return zones.Entry{}, err
	}
	e := zones.Entry{Zone: &zones.Zone{ID: id, Key: z.Key}, Path: z.Path, Dev: z.Dev, Ino: z.Ino}
	dev, ino, marked, err := d.fsys.Locate(z.Path, e.Zone)
	switch {
	case err == nil && marked && (dev != z.Dev || ino != z.Ino):
		e.Dev, e.Ino = dev, ino
		if !save {
			break
		}
		if z.Ino != 0 {
			d.log.Printf("zone %s (key %s): its root /%s has a new inode (%d, was %d): restored from a copy?", z.ID, z.Key, z.Path, ino, z.Ino)
		}
		rec := *z
		rec.Dev, rec.Ino = dev, ino
		if err := d.store.PutZone(&rec); err != nil {
			return e, err
		}
	case err != nil || !marked:
		d.log.Printf("WARNING: zone %s (key %s) is damaged: %s", z.ID, z.Key, d.fsys.ZoneHealth(e))
	}
	return e, nil
}
