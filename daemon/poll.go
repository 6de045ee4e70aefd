package daemon

import (
	"context"
	"time"

	"github.com/ezfs/ezfs/keystore"
	"github.com/ezfs/ezfs/keystore/providers"
)

// DefaultKMSPoll is how often the daemon asks providers for versions made there.
const DefaultKMSPoll = time.Hour

// pollRotations asks, every interval until stop closes, the provider of each main key's
// current version whether it holds a newer version (a Transit rotation done in Vault),
// and enrols it.
func (d *daemon) pollRotations(interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			d.detectRotations(context.Background())
		}
	}
}

func (d *daemon) detectRotations(ctx context.Context) {
	mks, err := d.store.MainKeys()
	if err != nil {
		d.log.Printf("rotation poll: %v", err)
		return
	}
	for _, mk := range mks {
		cur, err := d.store.CurrentMainKey(mk.Name)
		if err != nil || cur.Version != mk.Version {
			continue
		}
		qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		newer, err := d.ring.HasNewer(qctx, cur)
		if err == nil && newer {
			err = d.enrolDetected(qctx, cur)
		}
		cancel()
		if err != nil {
			d.log.Printf("rotation poll of main key %s: %v", cur.Ref(), err)
		}
	}
}

// enrolDetected makes the provider's newest version of cur's key cur's successor,
// after the usual self-test, and re-wraps the zone key versions cur's key protects.
func (d *daemon) enrolDetected(ctx context.Context, cur *keystore.MainKey) error {
	d.adminMu.Lock()
	defer d.adminMu.Unlock()
	if now, err := d.store.CurrentMainKey(cur.Name); err != nil || now.Version != cur.Version {
		return err // an admin command came first
	}
	next, err := d.store.NextMainVersion(cur.Name)
	if err != nil {
		return err
	}
	fields := map[string]any{"main_key": cur.Name, "main_version": next, "provider": cur.Provider}
	mk, p, err := providers.Enroll(ctx, providers.SpecOf(cur, next), next, d.sec.Clone(), false)
	if err == nil {
		mk.Origin = "detected"
		if err = d.store.AddMainKey(mk); err != nil {
			p.Close()
		}
	}
	if err != nil {
		d.audit.Action("kms.detected", fields, err)
		return err
	}
	d.ring.Adopt(mk, p)
	fields["key_ref"], fields["fingerprint"] = mk.KeyRef, mk.Fingerprint
	d.audit.Action("kms.detected", fields, nil)
	d.log.Printf("main key %s: the provider made a new version (%s); enrolled as %s", cur.Ref(), mk.KeyRef, mk.Ref())
	n, err := d.ring.Rewrap(ctx, cur.Name)
	d.audit.Action("kms.rewrap", map[string]any{"main_key": cur.Name, "rewrapped": n, "after": "kms.detected"}, err)
	return err
}
