package keystore

import (
	"context"
	"errors"
	"fmt"
	"sync"
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
	key      []byte // mlocked; zeroed on eviction
	lastUsed time.Time
}

// Keyring unwraps zone key versions through the providers and caches them, so a
// provider is called once per zone key version rather than once per file.
type Keyring struct {
	store *Store
	audit *Audit
	ttl   time.Duration

	pmu       sync.RWMutex
	providers map[string]Provider // guarded by pmu; by kind

	mu    sync.RWMutex
	cache map[versionRef]*cachedKey // guarded by mu; entries' key bytes read under mu.RLock

	stop chan struct{}
	done chan struct{}
}

// NewKeyring serves zone keys of store through providers (by kind). It starts an
// evictor; Close stops it and zeroes every cached key.
func NewKeyring(store *Store, providers []Provider, audit *Audit, ttl time.Duration) *Keyring {
	if ttl <= 0 {
		ttl = DefaultKeyTTL
	}
	k := &Keyring{
		store: store, providers: map[string]Provider{}, audit: audit, ttl: ttl,
		cache: map[versionRef]*cachedKey{}, stop: make(chan struct{}), done: make(chan struct{}),
	}
	for _, p := range providers {
		k.providers[p.Kind()] = p
	}
	go k.evictLoop()
	return k
}

// Store returns the keystore behind the keyring.
func (k *Keyring) Store() *Store { return k.store }

// Providers returns the providers by kind.
func (k *Keyring) Providers() map[string]Provider {
	k.pmu.RLock()
	defer k.pmu.RUnlock()
	out := make(map[string]Provider, len(k.providers))
	for kind, p := range k.providers {
		out[kind] = p
	}
	return out
}

// SetProvider makes p the provider of its kind, closing the one it replaces.
func (k *Keyring) SetProvider(p Provider) {
	k.pmu.Lock()
	old := k.providers[p.Kind()]
	k.providers[p.Kind()] = p
	k.pmu.Unlock()
	if old != nil && old != p {
		old.Close()
	}
}

// unwrapBackoff spaces the retries of an unwrap whose provider is unavailable; the
// whole sequence stays well under a FUSE request's patience.
var unwrapBackoff = []time.Duration{0, 200 * time.Millisecond, 600 * time.Millisecond}

// decrypt asks mk's provider, retrying while it is unavailable.
func (k *Keyring) decrypt(ctx context.Context, mk *MainKey, name string, version uint32, wrapped []byte) ([]byte, error) {
	k.pmu.RLock()
	p := k.providers[mk.Provider]
	k.pmu.RUnlock()
	if p == nil {
		return nil, fmt.Errorf("provider %s of main key v%d is not configured: %w", mk.Provider, mk.Version, ErrUnavailable)
	}
	var pt []byte
	var err error
	for _, wait := range unwrapBackoff {
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		pt, err = p.Decrypt(ctx, mk, wrapped)
		k.audit.CountUnwrap(mk, name, version, err)
		if !errors.Is(err, ErrUnavailable) {
			break
		}
	}
	return pt, err
}

// WithZoneKey calls fn with the unwrapped key name@version. The slice is only valid
// during fn and must not be retained or modified.
func (k *Keyring) WithZoneKey(ctx context.Context, name string, version uint32, fn func(key []byte) error) error {
	ref := versionRef{name, version}
	k.mu.RLock()
	if c := k.cache[ref]; c != nil {
		defer k.mu.RUnlock()
		c.lastUsed = time.Now() // a racy timestamp is harmless: it only delays eviction
		return fn(c.key)
	}
	k.mu.RUnlock()

	key, err := k.unwrap(ctx, name, version)
	if err != nil {
		return err
	}
	k.mu.Lock()
	if k.cache[ref] != nil {
		crypto.Zero(key) // another caller cached it first
	} else {
		_ = unix.Mlock(key) // best effort: without CAP_IPC_LOCK the key still works
		k.cache[ref] = &cachedKey{key: key, lastUsed: time.Now()}
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
	mk, err := k.store.MainKey(kv.MainVersion)
	if err != nil {
		return nil, fmt.Errorf("zone key %s@%d: %w", name, version, err)
	}
	pt, err := k.decrypt(ctx, mk, name, version, kv.Wrapped)
	if err != nil {
		return nil, fmt.Errorf("unwrap %s@%d with main key v%d (%s): %w", name, version, mk.Version, mk.Provider, err)
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
				if now.Sub(c.lastUsed) > k.ttl {
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
	var errs []error
	for _, p := range k.Providers() {
		errs = append(errs, p.Close())
	}
	return errors.Join(errs...)
}

// Rewrap re-wraps every zone key version that is not under the current main key
// version under it, so older main key versions can be retired. It returns how many
// versions it re-wrapped.
func (k *Keyring) Rewrap(ctx context.Context) (int, error) {
	cur, err := k.store.CurrentMainKey()
	if err != nil {
		return 0, err
	}
	pub, err := cur.Public()
	if err != nil {
		return 0, err
	}
	h, err := HashByName(cur.OAEPHash)
	if err != nil {
		return 0, err
	}
	zks, err := k.store.ZoneKeys()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, zk := range zks {
		for _, kv := range zk.Versions {
			if kv.MainVersion == cur.Version {
				continue
			}
			err := k.WithZoneKey(ctx, zk.Name, kv.Version, func(key []byte) error {
				wrapped, err := crypto.WrapZoneKey(pub, h, zk.Name, kv.Version, key)
				if err != nil {
					return err
				}
				return k.store.SetZoneKeyWrap(zk.Name, kv.Version, kv.MainVersion, cur.Version, wrapped)
			})
			if err != nil {
				return n, fmt.Errorf("rewrap %s@%d: %w", zk.Name, kv.Version, err)
			}
			n++
		}
	}
	return n, nil
}
