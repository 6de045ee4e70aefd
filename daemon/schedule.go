package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/ezfs/ezfs/control"
	"github.com/ezfs/ezfs/keystore"
)

// MinRotation is the shortest rotation period `key policy` accepts.
const MinRotation = time.Hour

// MinRotationEnv, in the environment of `ezfs mount`, lowers MinRotation for tests
// (a Go duration, at least 1s); the daemon reads it once, at start.
const MinRotationEnv = "EZFS_TEST_MIN_ROTATION"

// maxRollRetry bounds the wait before an automatic roll that failed is tried again
// (it is the period itself when that is shorter).
const maxRollRetry = 5 * time.Minute

// minRotation is the daemon's minimum rotation period.
func minRotation() (time.Duration, error) {
	v := os.Getenv(MinRotationEnv)
	if v == "" {
		return MinRotation, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Second {
		return 0, UsageError("%s=%q: want a duration of at least 1s", MinRotationEnv, v)
	}
	return d, nil
}

// mayRoll says whether zone key zk may be rolled by its policy: only an active key (a
// disabled or deleted one wraps nothing; its policy waits until it is enabled).
func mayRoll(zk *keystore.ZoneKey) bool { return zk != nil && zk.KeyState() == keystore.StateActive }

// maxWait bounds the scheduler's sleep (see run).
const maxWait = time.Minute

// rollFailure is an automatic roll that failed: when to try again, and why.
type rollFailure struct {
	retry time.Time
	err   error
}

// scheduler rolls zone keys whose rotation policy makes them due, with one timer for
// the next due key, re-armed by kick when a policy changes or a key is rolled.
type scheduler struct {
	d    *daemon
	min  time.Duration
	kick chan struct{}
	stop chan struct{}
	done chan struct{}

	mu     sync.Mutex
	failed map[string]rollFailure // guarded by mu
}

func newScheduler(d *daemon, min time.Duration) *scheduler {
	return &scheduler{d: d, min: min, kick: make(chan struct{}, 1), stop: make(chan struct{}),
		done: make(chan struct{}), failed: map[string]rollFailure{}}
}

// start runs the scheduler; a key overdue at mount is rolled at once (once).
func (s *scheduler) start() { go s.run() }

// close stops the scheduler; a roll in progress finishes first.
func (s *scheduler) close() {
	close(s.stop)
	<-s.done
}

// rearm makes the scheduler look at the policies again.
func (s *scheduler) rearm() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *scheduler) run() {
	defer close(s.done)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		t.Stop()
		var fire <-chan time.Time
		if next := s.rollDue(time.Now()); !next.IsZero() {
			// Timers count monotonic time, due times are wall-clock: after a suspend or
			// a clock step the wait is stale, so it is never longer than maxWait.
			t.Reset(min(time.Until(next), maxWait))
			fire = t.C
		}
		select {
		case <-s.stop:
			return
		case <-s.kick:
		case <-fire:
		}
	}
}

// rollDue rolls every key due at now, one after the other (a failure is kept for a
// later retry and does not stop the others), and returns when the next one is due
// (zero: none).
func (s *scheduler) rollDue(now time.Time) time.Time {
	zks, err := s.d.store.ZoneKeys()
	if err != nil {
		s.d.log.Printf("rotation schedule: %v", err)
		return now.Add(time.Minute)
	}
	var next time.Time
	for _, zk := range zks {
		due, ok := s.dueOf(zk)
		if !ok {
			continue
		}
		if !now.Before(due) {
			rolled, err := s.d.autoRoll(zk.Name, now)
			due = s.record(zk, rolled, err, now)
		}
		if next.IsZero() || due.Before(next) {
			next = due
		}
	}
	return next
}

// dueOf is when zk is to be rolled next: its policy's due time, or later the retry
// time of a roll that failed. ok is false for a key that is not to be rolled.
func (s *scheduler) dueOf(zk *keystore.ZoneKey) (time.Time, bool) {
	due, ok := zk.NextDue(s.min)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !ok || !mayRoll(zk) {
		delete(s.failed, zk.Name)
		return time.Time{}, false
	}
	if f, failed := s.failed[zk.Name]; failed && f.retry.After(due) {
		due = f.retry
	}
	return due, true
}

// record keeps the outcome of an automatic roll of zk and returns its next due time.
func (s *scheduler) record(zk *keystore.ZoneKey, rolled *keystore.ZoneKey, err error, now time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		retry := now.Add(min(zk.Policy.Every, maxRollRetry))
		s.failed[zk.Name] = rollFailure{retry: retry, err: err}
		s.d.log.Printf("WARNING: scheduled roll of key %s failed (tried again at %s): %v", zk.Name, retry.Format(time.RFC3339), err)
		return retry
	}
	delete(s.failed, zk.Name)
	if due, ok := rolled.NextDue(s.min); ok {
		return due
	}
	return now.Add(s.min) // the policy was cleared meanwhile: look again later
}

// failure is why the last automatic roll of key name failed ("" if it did not).
func (s *scheduler) failure(name string) (string, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.failed[name]
	if !ok {
		return "", time.Time{}
	}
	return f.err.Error(), f.retry
}

// forget drops the failure of key name (its policy changed).
func (s *scheduler) forget(name string) {
	s.mu.Lock()
	delete(s.failed, name)
	s.mu.Unlock()
}

// autoRoll rolls key name if its policy still makes it due at now (an admin may have
// rolled it meanwhile), once its main key's provider answers (new files need the new
// version unwrapped), audits and logs it, and starts reencryption if the policy asks.
// It returns the key as it is afterwards.
func (d *daemon) autoRoll(name string, now time.Time) (*keystore.ZoneKey, error) {
	d.adminMu.Lock()
	defer d.adminMu.Unlock()
	zk, err := d.store.ZoneKey(name)
	if err != nil || !zk.Due(now, d.sched.min) || !mayRoll(zk) {
		return zk, err
	}
	due, _ := zk.NextDue(d.sched.min)
	fields := map[string]any{"key": name, "by": "policy", "rotate_every": zk.Policy.Every.String(),
		"due": due.UTC().Format(time.RFC3339Nano), "main_key": zk.MainKey}
	// The roll's transaction asks again: another host on the same keystore may have
	// rolled the key since it was read here.
	rolled, err := d.rollChecked(zk, func(cur *keystore.ZoneKey) bool { return cur.Due(now, d.sched.min) && mayRoll(cur) })
	if errors.Is(err, keystore.ErrNotDue) {
		d.log.Printf("key %s: rolled meanwhile by another host, not by its policy here", name)
		return d.store.ZoneKey(name)
	}
	if err == nil {
		fields["version"] = rolled.Latest().Version
		fields["main_version"] = rolled.Latest().MainVersion
	}
	d.audit.Action(control.OpKeyRoll, fields, err)
	if err != nil {
		return nil, err
	}
	d.log.Printf("key %s: rolled to @%d by its policy (%s, due %s)", name, rolled.Latest().Version, zk.Policy, due.Format(time.RFC3339))
	if zk.Policy.Reencrypt {
		d.reencryptKey(rolled)
	}
	return rolled, nil
}

// rollChecked rolls zk, if due still says so in the roll's transaction, after asking
// the provider of its main key's current version.
func (d *daemon) rollChecked(zk *keystore.ZoneKey, due func(*keystore.ZoneKey) bool) (*keystore.ZoneKey, error) {
	mk, err := d.store.CurrentMainKey(zk.MainKey)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.ring.Check(ctx, mk); err != nil {
		return nil, fmt.Errorf("not rolled: main key %s does not answer: %w", mk.Ref(), err)
	}
	return d.store.RollZoneKeyIf(zk.Name, due)
}

// reencryptKey starts reencryption on every zone of zk, as `reencrypt start` does.
func (d *daemon) reencryptKey(zk *keystore.ZoneKey) {
	for _, e := range d.registry.List() {
		if e.Zone.Key != zk.Name {
			continue
		}
		_, err := d.reencrypt(control.OpReencryptStart, control.ReencryptArgs{Path: e.Path})
		if err != nil {
			d.audit.Action(control.OpReencryptStart, map[string]any{"zone": "/" + e.Path, "key": zk.Name, "by": "policy"}, err)
			d.log.Printf("WARNING: key %s rolled by its policy, but reencryption of zone /%s did not start: %v", zk.Name, e.Path, err)
			continue
		}
		d.log.Printf("key %s: reencryption of zone /%s to @%d started by its policy", zk.Name, e.Path, zk.Latest().Version)
	}
}

// keyPolicy sets or clears the rotation policy of a zone key.
func (d *daemon) keyPolicy(a control.KeyPolicyArgs) (*control.KeyInfo, error) {
	var p *keystore.Policy
	switch {
	case a.RotateEvery < 0:
		return nil, UsageError("--rotate-every must not be negative")
	case a.RotateEvery == 0 && a.Reencrypt:
		return nil, UsageError("--reencrypt needs a rotation period (--rotate-every)")
	case a.RotateEvery > 0:
		p = &keystore.Policy{Every: a.RotateEvery, Reencrypt: a.Reencrypt, Set: time.Now().UTC()}
	}
	d.adminMu.Lock()
	zk, err := d.store.SetPolicy(a.Name, p, d.sched.min)
	d.adminMu.Unlock()
	d.audit.Action(control.OpKeyPolicy, map[string]any{"key": a.Name, "rotate_every": a.RotateEvery.String(), "reencrypt": a.Reencrypt}, err)
	if err != nil {
		return nil, keyError(a.Name, err)
	}
	d.sched.forget(a.Name)
	d.sched.rearm()
	return d.keyInfo(zk)
}

// policyInfo adds zk's rotation policy and next due time to ki.
func (d *daemon) policyInfo(zk *keystore.ZoneKey, ki *control.KeyInfo) {
	if zk.Policy == nil {
		return
	}
	p := zk.Policy
	ki.Policy = &control.KeyPolicy{RotateEvery: p.Every.String(), Seconds: p.Every.Seconds(), Reencrypt: p.Reencrypt, Set: p.Set}
	if due, ok := zk.NextDue(d.sched.min); ok && mayRoll(zk) {
		if why, retry := d.sched.failure(zk.Name); why != "" {
			ki.RotationError, due = why, retry
		}
		ki.NextRotation = &due
	}
}
