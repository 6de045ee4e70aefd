package keystore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ezfs/ezfs/crypto"
	"golang.org/x/sys/unix"
)

// DefaultKeyTTL bounds how long an unwrapped zone key version stays in memory unused.
const DefaultKeyTTL = 10 * time.Minute

type versionRef struct {
	name    string
	version uint32
}

type cachedKey struct {
	key []byte // mlocked; zeroed on eviction
	// lastUsed is the time of the last use in Unix nanoseconds; atomic, since users
	// hold only the keyring's read lock.
	lastUsed atomic.Int64
}

// Keyring unwraps zone key versions through the providers of the main key versions
// that wrap them, one provider instance per main key version, and caches them, so a
// provider is called once per zone key version rather than once per file.
type Keyring struct {
	store *Store
	audit *Audit
	ttl   time.Duration
	pool  *pool

	mu    sync.RWMutex
	cache map[versionRef]*cachedKey // guarded by mu; entries' key bytes read under mu.RLock
	gen   uint64                    // guarded by mu: counts Forgets

	stop chan struct{}
	done chan struct{}
}

// NewKeyring serves zone keys of store through the given providers, by kind (tests and
// tools that unlock providers themselves). It starts an evictor; Close stops it and
// zeroes every cached key.
func NewKeyring(store *Store, providers []Provider, audit *Audit, ttl time.Duration) *Keyring {
	return NewKeyringOpener(store, StaticOpener(providers...), audit, ttl)
}

// NewKeyringOpener serves zone keys of store through one provider instance per main
// key version, built by open when the version is first needed.
func NewKeyringOpener(store *Store, open Opener, audit *Audit, ttl time.Duration) *Keyring {
	if ttl <= 0 {
		ttl = DefaultKeyTTL
	}
	k := &Keyring{
		store: store, audit: audit, ttl: ttl, pool: newPool(open),
		cache: map[versionRef]*cachedKey{}, stop: make(chan struct{}), done: make(chan struct{}),
	}
	go k.evictLoop()
	return k
}

// Store returns the keystore behind the keyring.
func (k *Keyring) Store() *Store { return k.store }

// Adopt makes p the provider instance of main key version mk (just enrolled with it).
func (k *Keyring) Adopt(mk *MainKey, p Provider) { k.pool.adopt(mk.Ref(), p) }

// Check asks mk's provider for its status now (opening it if needed) and records the
// answer as mk's health.
func (k *Keyring) Check(ctx context.Context, mk *MainKey) error {
	return k.pool.call(ctx, mk, func(p Provider) error { return p.Status(ctx) })
}

// CheckNow is Check that also tries again at once to open a provider that failed to
// open (kms check: "ask now"), where Check and unwraps wait a little between attempts.
func (k *Keyring) CheckNow(ctx context.Context, mk *MainKey) error {
	return k.pool.callNow(ctx, mk, true, func(p Provider) error { return p.Status(ctx) })
}

// HasNewer asks mk's provider whether it holds a newer version of mk's key than mk (a
// rotation made in the provider); false for providers that cannot rotate by themselves.
func (k *Keyring) HasNewer(ctx context.Context, mk *MainKey) (bool, error) {
	var newer bool
	err := k.pool.call(ctx, mk, func(p Provider) error {
		r, ok := p.(Rotating)
		if !ok {
			return nil
		}
		var err error
		newer, err = r.HasNewer(ctx, mk)
		return err
	})
	return newer, err
}

// Health is what mk's provider last answered; ok is false if it was never asked.
func (k *Keyring) Health(ref MainRef) (Health, bool) { return k.pool.healthOf(ref) }

// Drop closes the provider instance of a retired main key version, unless another
// version still uses it; calls in it finish first.
func (k *Keyring) Drop(ref MainRef) error { return k.pool.drop(ref) }

// unwrapBackoff spaces the retries of an unwrap whose provider is unavailable; the
// whole sequence stays well under a FUSE request's patience.
var unwrapBackoff = []time.Duration{0, 200 * time.Millisecond, 600 * time.Millisecond}

// decrypt asks mk's provider, retrying while it is unavailable.
func (k *Keyring) decrypt(ctx context.Context, mk *MainKey, name string, version uint32, wrapped []byte) ([]byte, error) {
	var pt []byte
	var err error
	for _, wait := range unwrapBackoff {
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		err = k.pool.call(ctx, mk, func(p Provider) error {
			var derr error
			pt, derr = p.Decrypt(ctx, mk, wrapped)
			return derr
		})
		k.audit.CountUnwrap(mk, name, version, err)
		if !errors.Is(err, ErrUnavailable) {
			break
		}
	}
	return pt, err
}

// WithZoneKey calls fn with the unwrapped key name@version. The slice is only valid
// during fn and must not be retained or modified.
// A key that is not active (disabled, deleted, purged) wraps and unwraps nothing.
func (k *Keyring) WithZoneKey(ctx context.Context, name string, version uint32, fn func(key []byte) error) error {
	if err := k.store.Usable(name); err != nil {
		return err
	}
	ref := versionRef{name, version}
	k.mu.RLock()
	if c := k.cache[ref]; c != nil {
		defer k.mu.RUnlock()
		c.lastUsed.Store(time.Now().UnixNano())
		return fn(c.key)
	}
	gen := k.gen
	k.mu.RUnlock()

	key, err := k.unwrap(ctx, name, version)
	if err != nil {
		return err
	}
	k.mu.Lock()
	// The unwrap may have been slow (a provider's round trip): a state change made
	// meanwhile wins. A key no longer active is not cached; after a Forget (which
	// follows every change, of a version too) the record is read again.
	if err := k.store.Usable(name); err != nil || k.gen != gen {
		k.mu.Unlock()
		crypto.Zero(key)
		if err != nil {
			return err
		}
		return k.WithZoneKey(ctx, name, version, fn)
	}
	if k.cache[ref] != nil {
		crypto.Zero(key) // another caller cached it first
	} else {
		_ = unix.Mlock(key) // best effort: without CAP_IPC_LOCK the key still works
		c := &cachedKey{key: key}
		c.lastUsed.Store(time.Now().UnixNano())
		k.cache[ref] = c
	}
	k.mu.Unlock()
	k.mu.RLock()
	defer k.mu.RUnlock()
	c := k.cache[ref]
	if c == nil { // evicted in between; rare, unwrap again
		return k.WithZoneKey(ctx, name, version, fn)
	}
	return fn(c.key)
}

func (k *Keyring) unwrap(ctx context.Context, name string, version uint32) ([]byte, error) {
	zk, err := k.store.ZoneKey(name)
	if err != nil {
		return nil, err
	}
	kv, ok := zk.Version(version)
	if !ok {
		return nil, fmt.Errorf("zone key %s@%d: %w", name, version, ErrKeyNotFound)
	}
	if !kv.Unwrappable() {
		return nil, fmt.Errorf("zone key %s@%d is %s: %w", name, version, kv.VersionState(), ErrKeyNotFound)
	}
	mk, err := k.store.MainKey(kv.Main())
	if err != nil {
		return nil, fmt.Errorf("zone key %s@%d: %w", name, version, err)
	}
	pt, err := k.decrypt(ctx, mk, name, version, kv.Wrapped)
	if err != nil {
		return nil, fmt.Errorf("unwrap %s@%d with main key %s (%s): %w", name, version, mk.Ref(), mk.Provider, err)
	}
	defer crypto.Zero(pt)
	key, err := crypto.UnwrappedZoneKey(pt, name, version)
	if errors.Is(err, crypto.ErrAuth) {
		return nil, fmt.Errorf("%v: %w", err, ErrInvalidCiphertext)
	}
	return key, err
}

func (k *Keyring) evictLoop() {
	defer close(k.done)
	t := time.NewTicker(k.ttl / 4)
	defer t.Stop()
	for {
		select {
		case <-k.stop:
			return
		case now := <-t.C:
			k.mu.Lock()
			for ref, c := range k.cache {
				if now.Sub(time.Unix(0, c.lastUsed.Load())) > k.ttl {
					evict(c)
					delete(k.cache, ref)
				}
			}
			k.mu.Unlock()
		}
	}
}

func evict(c *cachedKey) {
	crypto.Zero(c.key)
	_ = unix.Munlock(c.key)
}

// Forget zeroes the cached unwrapped versions of zone key name (version 0: all of
// them), after a state change that stops the key or version unwrapping.
func (k *Keyring) Forget(name string, version uint32) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.gen++
	for ref, c := range k.cache {
		if ref.name == name && (version == 0 || ref.version == version) {
			evict(c)
			delete(k.cache, ref)
		}
	}
}

// Cached reports how many zone key versions are unwrapped in memory.
func (k *Keyring) Cached() int {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return len(k.cache)
}

// Close zeroes every cached key and closes the providers.
func (k *Keyring) Close() error {
	close(k.stop)
	<-k.done
	k.mu.Lock()
	for ref, c := range k.cache {
		evict(c)
		delete(k.cache, ref)
	}
	k.mu.Unlock()
	return k.pool.closeAll()
}

// Rewrap re-wraps every zone key version wrapped by an older version of main key main
// under its current version, so the older versions can be retired. It returns how
// many versions it re-wrapped.
func (k *Keyring) Rewrap(ctx context.Context, main string) (int, error) {
	cur, err := k.store.CurrentMainKey(main)
	if err != nil {
		return 0, err
	}
	zks, err := k.store.ZoneKeys()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, zk := range zks {
		if zk.KeyState() != StateActive {
			continue // it unwraps nothing; kms retire names its versions
		}
		for _, kv := range zk.Versions {
			if kv.MainName != cur.Name || kv.MainVersion == cur.Version || !kv.Unwrappable() {
				continue
			}
			if err := k.rewrapVersion(ctx, zk.Name, kv, cur); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// SetMain moves zone key name to main key main: every version is re-wrapped under
// main's current version, then new versions are made under main. File contents and
// EDEKs are untouched (the zone key versions stay the same keys). It returns how many
// versions it re-wrapped.
func (k *Keyring) SetMain(ctx context.Context, name, main string) (int, error) {
	cur, err := k.store.CurrentMainKey(main)
	if err != nil {
		return 0, err
	}
	zk, err := k.store.ZoneKey(name)
	if err != nil {
		return 0, err
	}
	if err := k.store.Usable(name); err != nil {
		return 0, fmt.Errorf("%v: enable it first: %w", err, ErrKeyState)
	}
	n := 0
	for _, kv := range zk.Versions {
		if kv.Main() == cur.Ref() || !kv.Unwrappable() {
			continue
		}
		if err := k.rewrapVersion(ctx, name, kv, cur); err != nil {
			return n, err
		}
		n++
	}
	return n, k.store.SetZoneKeyMain(name, cur.Name)
}

// rewrapVersion wraps zone key version name@kv under main key version to.
func (k *Keyring) rewrapVersion(ctx context.Context, name string, kv ZoneKeyVersion, to *MainKey) error {
	pub, err := to.Public()
	if err != nil {
		return err
	}
	h, err := HashByName(to.OAEPHash)
	if err != nil {
		return err
	}
	err = k.WithZoneKey(ctx, name, kv.Version, func(key []byte) error {
		wrapped, err := crypto.WrapZoneKey(pub, h, name, kv.Version, key)
		if err != nil {
			return err
		}
		return k.store.SetZoneKeyWrap(name, kv.Version, kv.Main(), to.Ref(), wrapped)
	})
	if err != nil {
		return fmt.Errorf("rewrap %s@%d under main key %s: %w", name, kv.Version, to.Ref(), err)
	}
	return nil
}
