package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ezfs/ezfs/control"
	"github.com/ezfs/ezfs/keystore"
	"github.com/ezfs/ezfs/zones"
)

// lifecycleOps maps the control operations that change a zone key's state to the
// keystore's.
var lifecycleOps = map[string]keystore.LifecycleOp{
	control.OpKeyDisable: keystore.OpDisable,
	control.OpKeyEnable:  keystore.OpEnable,
	control.OpKeyDelete:  keystore.OpDelete,
	control.OpKeyRecover: keystore.OpRecover,
	control.OpKeyPurge:   keystore.OpPurge,
}

// keyLifecycle answers the lifecycle operations (lifecycleOps and retire); each is
// audited, refused or not.
func (d *daemon) keyLifecycle(ctx context.Context, op string, raw json.RawMessage) (*control.KeyInfo, error) {
	a, err := decode[control.KeyStateArgs](raw)
	if err != nil {
		return nil, err
	}
	d.adminMu.Lock()
	defer d.adminMu.Unlock()
	fields := map[string]any{"key": a.Name}
	if zk, err := d.store.ZoneKey(a.Name); err == nil {
		fields["main_key"] = zk.MainKey // as every audited action about a key names it
	}
	var zk *keystore.ZoneKey
	if op == control.OpKeyRetire {
		zk, err = d.retireVersion(ctx, a, fields)
	} else {
		zk, err = d.changeKeyState(ctx, lifecycleOps[op], a, fields)
	}
	d.audit.Action(op, fields, err)
	if err != nil {
		return nil, keyError(a.Name, err)
	}
	d.sched.rearm() // a key's rotation policy runs only while it is active
	return d.keyInfo(zk)
}

// changeKeyState applies op to key a.Name. A key that stops being active stops at
// once: its cached unwrapped versions are zeroed and the kernel drops the cached
// pages of its zones' files, whose every request is refused from then on.
func (d *daemon) changeKeyState(ctx context.Context, op keystore.LifecycleOp, a control.KeyStateArgs, fields map[string]any) (*keystore.ZoneKey, error) {
	o := keystore.LifecycleOptions{Retention: a.Retention, MinRetention: d.cfg.MinRetention, Force: a.Force}
	if op == keystore.OpDelete {
		if o.Retention == 0 {
			o.Retention = keystore.DefaultRetention
		}
		fields["retention"] = o.Retention.String()
	}
	if op == keystore.OpPurge && a.Force {
		fields["force"] = true
		if err := d.checkUnreferenced(ctx, a.Name); err != nil {
			return nil, err
		}
	}
	zk, err := d.store.ChangeKeyState(a.Name, op, o)
	if err != nil {
		return nil, err
	}
	fields["state"] = zk.KeyState()
	if zk.PurgeAfter != nil {
		fields["purge_after"] = zk.PurgeAfter.Format(time.RFC3339)
	}
	if zk.KeyState() == keystore.StateActive {
		d.log.Printf("zone key %s is active again: its zones serve", a.Name)
		return zk, nil
	}
	d.ring.Forget(a.Name, 0)
	n := d.fsys.DropKeyCaches(a.Name)
	d.log.Printf("zone key %s is %s: its zones answer EACCES (cached pages of %d files dropped)", a.Name, zk.KeyState(), n)
	return zk, nil
}

// checkUnreferenced scans the whole backing directory (files of zones no longer
// registered included) for a file that may be under key name; purge --force needs a
// scan that finds none.
func (d *daemon) checkUnreferenced(ctx context.Context, name string) error {
	refs, err := zones.ScanRefs(ctx, d.fsys.Root(), d.registry.List(), true)
	if err != nil {
		return fmt.Errorf("scan for files under key %q: %w", name, err)
	}
	if n := refs.Of(name, 0); n > 0 {
		return fmt.Errorf("%d files still reference key %q: %w", n, name, keystore.ErrInUse)
	}
	if refs.Unattributed > 0 {
		return fmt.Errorf("%d files outside every zone have EDEKs that do not name their key (they may be under %q): move them off the backing directory or wait for the purge date: %w",
			refs.Unattributed, name, keystore.ErrInUse)
	}
	return nil
}

// retireVersion retires a.Name@a.Version after a fresh scan of every zone finds no
// file on it.
func (d *daemon) retireVersion(ctx context.Context, a control.KeyStateArgs, fields map[string]any) (*keystore.ZoneKey, error) {
	fields["version"] = a.Version
	zk, err := d.store.ZoneKey(a.Name)
	if err != nil {
		return nil, err
	}
	if _, ok := zk.Version(a.Version); !ok {
		return nil, NotFoundError("key %s@%d does not exist", a.Name, a.Version)
	}
	if zk.Latest().Version == a.Version {
		return nil, fmt.Errorf("%s@%d is the key's latest version (new files use it): roll the key first: %w", a.Name, a.Version, keystore.ErrKeyState)
	}
	refs, err := zones.ScanRefs(ctx, d.fsys.Root(), d.registry.List(), false)
	if err != nil {
		return nil, fmt.Errorf("scan the zones for files on %s@%d: %w", a.Name, a.Version, err)
	}
	n := refs.Of(a.Name, a.Version)
	fields["files"] = n
	if n > 0 {
		return nil, fmt.Errorf("%d files still reference %s@%d: run 'ezfs reencrypt start' on the key's zones first: %w", n, a.Name, a.Version, keystore.ErrInUse)
	}
	if zk, err = d.store.RetireZoneKeyVersion(a.Name, a.Version); err != nil {
		return nil, err
	}
	d.ring.Forget(a.Name, a.Version)
	d.log.Printf("zone key version %s@%d is retired: its wrapped material is destroyed", a.Name, a.Version)
	return zk, nil
}

// lifecycleOf is the lifecycle part of zk's description.
func lifecycleOf(zk *keystore.ZoneKey) control.KeyLifecycle {
	return control.KeyLifecycle{State: zk.KeyState(), Deleted: zk.Deleted, PurgeAfter: zk.PurgeAfter, Purged: zk.Purged}
}
