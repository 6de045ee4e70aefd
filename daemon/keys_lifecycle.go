package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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

// versionOps maps the control operations that, given NAME@N, change a version's state.
var versionOps = map[string]keystore.VersionOp{
	control.OpKeyRetire:  keystore.VersionRetire,
	control.OpKeyRecover: keystore.VersionRecover,
	control.OpKeyPurge:   keystore.VersionPurge,
}

// keyLifecycle answers the lifecycle operations (lifecycleOps, and versionOps for
// NAME@N); each is audited, refused or not.
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
	vop, byVersion := versionOps[op]
	switch {
	case byVersion && (a.Version != 0 || op == control.OpKeyRetire):
		zk, err = d.changeVersionState(ctx, vop, a, fields)
	case a.Version != 0:
		err = UsageError("key %s takes a key NAME, not NAME@N", strings.TrimPrefix(op, "key."))
	default:
		zk, err = d.changeKeyState(ctx, lifecycleOps[op], a, fields)
	}
	d.audit.Action(op, fields, err)
	if err != nil {
		return nil, keyError(a.Name, err)
	}
	d.sched.rearm() // a key's rotation policy runs only while it is active
	return d.keyInfo(zk)
}

// changeKeyState applies op to key a.Name, after checking that the key's state allows
// it. A key that stops being active stops at once: its reencryption jobs are cancelled,
// the kernel writes back and drops the cached pages of its zones' files (while the key
// still serves, so that dirty pages of shared mappings reach the disk), and then, as
// for a change made through another host (keyStopped), its cached unwrapped versions
// are zeroed and every request of its zones is refused from then on.
func (d *daemon) changeKeyState(ctx context.Context, op keystore.LifecycleOp, a control.KeyStateArgs, fields map[string]any) (*keystore.ZoneKey, error) {
	o := keystore.LifecycleOptions{Retention: a.Retention, MinRetention: d.cfg.MinRetention, Force: a.Force}.WithDefaults()
	if op == keystore.OpDelete {
		fields["retention"] = o.Retention.String()
	}
	if err := d.store.CheckKeyChange(a.Name, op, o); err != nil {
		return nil, err
	}
	if op == keystore.OpPurge {
		fields["force"] = a.Force
		if err := d.checkUnused(ctx, a.Name, 0, a.Force, fields); err != nil {
			return nil, err
		}
	}
	stops := op == keystore.OpDisable || op == keystore.OpDelete
	if stops {
		why := fmt.Sprintf("zone key %s was %sd: start it again after 'ezfs key enable %s'", a.Name, op, a.Name)
		if zs := d.reenc.CancelKey(a.Name, why); len(zs) > 0 {
			fields["cancelled_jobs"] = zs
		}
		d.fsys.DropKeyCaches(a.Name)
	}
	zk, err := d.store.ChangeKeyState(a.Name, op, o)
	if err != nil {
		return nil, err
	}
	fields["state"] = zk.KeyState()
	if zk.PurgeAfter != nil {
		fields["purge_after"] = zk.PurgeAfter.Format(time.RFC3339)
	}
	// The rest, as for a change made through another host: keyStopped (its cached
	// versions zeroed, pages read back in between dropped) or serving again.
	d.applyChange()
	return zk, nil
}

// changeVersionState applies op to a.Name@a.Version. Retire and purge need the
// version unused: see checkUnused.
func (d *daemon) changeVersionState(ctx context.Context, op keystore.VersionOp, a control.KeyStateArgs, fields map[string]any) (*keystore.ZoneKey, error) {
	if a.Version == 0 {
		return nil, UsageError("key %s needs NAME@VERSION (e.g. logs@1)", op)
	}
	fields["version"] = a.Version
	zk, err := d.store.ZoneKey(a.Name)
	if err != nil {
		return nil, err
	}
	if err := zk.CheckVersionChange(op, a.Version); err != nil {
		if errors.Is(err, keystore.ErrKeyNotFound) {
			return nil, NotFoundError("key %s@%d does not exist", a.Name, a.Version)
		}
		return nil, err
	}
	if op != keystore.VersionRecover {
		if err := d.checkUnused(ctx, a.Name, a.Version, false, fields); err != nil {
			return nil, err
		}
	}
	if zk, err = d.store.ChangeVersionState(a.Name, a.Version, op); err != nil {
		return nil, err
	}
	d.applyChange() // its unwrapped material zeroed if it no longer unwraps
	kv, _ := zk.Version(a.Version)
	fields["state"] = kv.VersionState()
	return zk, nil
}

// checkUnused is nil when nothing uses name@version (version 0: any version of name),
// as the step that destroys its material (or stops it unwrapping) requires: no
// reencryption job is active on the key's zones (a job writes EDEKs under its target
// later than it re-wrapped them), no open file of the mount is on it (those include
// files the scan cannot see: unlinked while open, O_TMPFILE), and a fresh scan finds
// no file on it (of the zones; for a whole key, of the whole backing directory, and,
// with unattributed, no file outside every zone whose EDEK does not name its key).
func (d *daemon) checkUnused(ctx context.Context, name string, version uint32, unattributed bool, fields map[string]any) error {
	what := fmt.Sprintf("%s@%d", name, version)
	if version == 0 {
		what = fmt.Sprintf("key %q", name)
	}
	jobs, err := d.reenc.ActiveOn(name)
	if err != nil {
		return err
	}
	if len(jobs) > 0 {
		return fmt.Errorf("a reencryption job is running on zone %s of key %q: wait for it to end or cancel it: %w", strings.Join(jobs, ", "), name, keystore.ErrInUse)
	}
	if err := d.checkOpen(name, version, what); err != nil {
		return err
	}
	refs, err := zones.ScanRefs(ctx, d.fsys.Root(), d.registry.List(), version == 0)
	if err != nil {
		return fmt.Errorf("scan for files under %s: %w", what, err)
	}
	n := refs.Of(name, version)
	fields["files"] = n
	if n > 0 {
		return fmt.Errorf("%d files still reference %s: run 'ezfs reencrypt start' on the key's zones first: %w", n, what, keystore.ErrInUse)
	}
	if unattributed && refs.Unattributed > 0 {
		return fmt.Errorf("%d files outside every zone have EDEKs that do not name their key (they may be under %s): move them off the backing directory or wait for the purge date: %w",
			refs.Unattributed, what, keystore.ErrInUse)
	}
	return d.checkOpen(name, version, what) // again: files created while the scan ran
}

// checkOpen refuses while an open file of the mount is on name@version.
func (d *daemon) checkOpen(name string, version uint32, what string) error {
	if n := d.fsys.VersionInUse(name, version); n > 0 {
		return fmt.Errorf("%d open files are under %s (files unlinked while open and O_TMPFILE files included): close them first: %w", n, what, keystore.ErrInUse)
	}
	return nil
}

// lifecycleOf is the lifecycle part of zk's description.
func lifecycleOf(zk *keystore.ZoneKey) control.KeyLifecycle {
	return control.KeyLifecycle{State: zk.KeyState(), Deleted: zk.Deleted, PurgeAfter: zk.PurgeAfter, Purged: zk.Purged}
}
