package keystore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Opener builds the provider instance that serves main key version mk, from what mk
// recorded (module and token, Vault address and key, where its credential comes from).
// The keyring owns what it returns and closes it when no active version needs it.
type Opener func(ctx context.Context, mk *MainKey) (Provider, error)

// reopenAfter spaces the attempts to open a provider instance that failed to open, so
// that a tenant whose HSM is gone does not cost every request a new attempt.
var reopenAfter = 2 * time.Second

// instance is one provider, shared by the versions the opener returned it for.
type instance struct {
	use    sync.RWMutex // read-held by every call into p; close takes it exclusively
	p      Provider
	closed bool // guarded by use
	refs   int  // versions served; guarded by pool.mu
}

func (i *instance) close() error {
	i.use.Lock()
	defer i.use.Unlock()
	if i.closed {
		return nil
	}
	i.closed = true
	return i.p.Close()
}

// slot is the provider instance of one main key version, opened on first use.
type slot struct {
	open  sync.Mutex // serialises opening this version only
	inst  *instance  // guarded by pool.mu
	err   error      // guarded by open: the last failure to open
	tried time.Time  // guarded by open
}

// Health is what the last call to a main key version's provider said, and since when.
type Health struct {
	OK    bool      `json:"ok"`
	Error string    `json:"error,omitempty"`
	Since time.Time `json:"since"`
}

// pool keeps one provider instance per main key version. An instance is closed only
// when no version needing it is open any more, and never while a call is in it.
type pool struct {
	open Opener

	mu     sync.Mutex
	slots  map[MainRef]*slot      // guarded by mu
	insts  map[Provider]*instance // guarded by mu
	health map[MainRef]Health     // guarded by mu
}

func newPool(open Opener) *pool {
	return &pool{open: open, slots: map[MainRef]*slot{}, insts: map[Provider]*instance{}, health: map[MainRef]Health{}}
}

func (p *pool) slot(ref MainRef) *slot {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.slots[ref]
	if s == nil {
		s = &slot{}
		p.slots[ref] = s
	}
	return s
}

func (p *pool) instanceOf(s *slot) *instance {
	p.mu.Lock()
	defer p.mu.Unlock()
	return s.inst
}

// get returns the instance of mk, opening it if it is not open yet; a failed open is
// tried again only reopenAfter later, unless now.
func (p *pool) get(ctx context.Context, mk *MainKey, now bool) (*instance, error) {
	s := p.slot(mk.Ref())
	if inst := p.instanceOf(s); inst != nil {
		return inst, nil
	}
	s.open.Lock()
	defer s.open.Unlock()
	if inst := p.instanceOf(s); inst != nil {
		return inst, nil
	}
	if s.err != nil && !now && time.Since(s.tried) < reopenAfter {
		return nil, s.err
	}
	prov, err := p.open(ctx, mk)
	s.tried = time.Now()
	if err != nil {
		s.err = fmt.Errorf("open the provider of main key %s: %w", mk.Ref(), err)
		return nil, s.err
	}
	s.err = nil
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.attachLocked(s, prov), nil
}

// attachLocked makes prov the instance of slot s, one provider instance shared by
// the versions that open to it; p.mu is held.
func (p *pool) attachLocked(s *slot, prov Provider) *instance {
	inst := p.insts[prov]
	if inst == nil {
		inst = &instance{p: prov}
		p.insts[prov] = inst
	}
	inst.refs++
	s.inst = inst
	return inst
}

// call runs fn with mk's provider, which stays open until fn returns, and notes how
// the provider answered.
func (p *pool) call(ctx context.Context, mk *MainKey, fn func(Provider) error) error {
	return p.callNow(ctx, mk, false, fn)
}

// callNow is call; with now, a provider that failed to open is tried again at once.
func (p *pool) callNow(ctx context.Context, mk *MainKey, now bool, fn func(Provider) error) error {
	err := p.callOnce(ctx, mk, now, fn)
	p.note(mk.Ref(), err)
	return err
}

func (p *pool) callOnce(ctx context.Context, mk *MainKey, now bool, fn func(Provider) error) error {
	inst, err := p.get(ctx, mk, now)
	if err != nil {
		return err
	}
	inst.use.RLock()
	defer inst.use.RUnlock()
	if inst.closed {
		return fmt.Errorf("provider of main key %s is closed: %w", mk.Ref(), ErrUnavailable)
	}
	return fn(inst.p)
}

// note records the health of ref: only a provider's own trouble makes it unhealthy,
// not a tampered ciphertext.
func (p *pool) note(ref MainRef, err error) {
	h := Health{OK: true}
	if errors.Is(err, ErrUnavailable) || errors.Is(err, ErrPermission) || errors.Is(err, ErrKeyNotFound) {
		h = Health{Error: err.Error()}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	old, seen := p.health[ref]
	h.Since = time.Now().UTC()
	if seen && old.OK == h.OK {
		h.Since = old.Since
	}
	p.health[ref] = h
}

// healthOf is the last known health of ref; ok false when it was never used.
func (p *pool) healthOf(ref MainRef) (Health, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	h, ok := p.health[ref]
	return h, ok
}

// drop forgets ref (a retired version) and closes its instance if no other version
// uses it.
func (p *pool) drop(ref MainRef) error {
	p.mu.Lock()
	s := p.slots[ref]
	delete(p.slots, ref)
	delete(p.health, ref)
	var last *instance
	if s != nil && s.inst != nil {
		s.inst.refs--
		if s.inst.refs == 0 {
			last = s.inst
			delete(p.insts, last.p)
		}
	}
	p.mu.Unlock()
	if last != nil {
		return last.close()
	}
	return nil
}

// closeAll closes every instance, waiting for the calls in them.
func (p *pool) closeAll() error {
	p.mu.Lock()
	insts := p.insts
	p.insts, p.slots = map[Provider]*instance{}, map[MainRef]*slot{}
	p.mu.Unlock()
	var errs []error
	for _, inst := range insts {
		errs = append(errs, inst.close())
	}
	return errors.Join(errs...)
}

// StaticOpener serves every main key version with the given provider of its kind (for
// tests and benchmarks that unlock providers themselves).
func StaticOpener(provs ...Provider) Opener {
	byKind := map[string]Provider{}
	for _, p := range provs {
		byKind[p.Kind()] = p
	}
	return func(ctx context.Context, mk *MainKey) (Provider, error) {
		if p := byKind[mk.Provider]; p != nil {
			return p, nil
		}
		return nil, fmt.Errorf("no %s provider: %w", mk.Provider, ErrUnavailable)
	}
}

// adopt makes prov the instance of ref (a version just enrolled with it), closing
// the one it replaces if nothing else uses that.
func (p *pool) adopt(ref MainRef, prov Provider) {
	_ = p.drop(ref)
	s := p.slot(ref)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.attachLocked(s, prov)
}
