package daemon

import (
	"context"
	"fmt"

	"github.com/ezfs/ezfs/control"
	"github.com/ezfs/ezfs/keystore"
	"github.com/ezfs/ezfs/keystore/providers"
)

func (d *daemon) kms(ctx context.Context, op string, a control.KMSArgs) (any, error) {
	d.adminMu.Lock()
	defer d.adminMu.Unlock()
	sec := providers.Secrets{Passphrase: a.Passphrase, PIN: a.PIN}
	switch op {
	case control.OpKMSRotate, control.OpKMSSet:
		cur, err := d.store.CurrentMainKey()
		if err != nil {
			return nil, err
		}
		next, err := d.store.NextMainVersion()
		if err != nil {
			return nil, err
		}
		spec := providers.SpecOf(cur, next)
		if op == control.OpKMSSet {
			spec = providers.Spec{Provider: a.Provider, PKCS11Module: a.PKCS11Module, PKCS11Token: a.PKCS11Token,
				PKCS11Key: a.PKCS11Key, VaultKey: a.VaultKey, VaultMount: a.VaultMount}
		}
		if spec.Provider == "vault" {
			spec.VaultAddress, spec.VaultToken, spec.VaultNamespace, spec.VaultCACert = a.VaultAddress, a.VaultToken, a.VaultNamespace, a.VaultCACert
		}
		if spec.Provider == keystore.KindSystem {
			// A new sealed key must open with the passphrase that opens the others.
			if err := d.checkPassphrase(a.Passphrase); err != nil {
				return nil, err
			}
		}
		mk, p, err := providers.Enroll(ctx, spec, next, sec, op == control.OpKMSRotate, d.ring.Providers())
		fields := map[string]any{"provider": spec.Provider, "main_version": next}
		if err != nil {
			d.audit.Action(op, fields, err)
			return nil, err
		}
		if err := d.store.AddMainKey(mk); err != nil {
			p.Close()
			d.audit.Action(op, fields, err)
			return nil, err
		}
		if mk.Provider == keystore.KindSystem {
			// One provider holds every unlocked system version.
			mks, err := d.store.MainKeys()
			if err != nil {
				return nil, err
			}
			p.Close()
			var active []*keystore.MainKey
			for _, m := range mks {
				if m.State == keystore.StateActive {
					active = append(active, m)
				}
			}
			if p, err = keystore.UnlockSystem(active, a.Passphrase); err != nil {
				return nil, err
			}
		}
		d.ring.SetProvider(p)
		fields["key_ref"], fields["fingerprint"] = mk.KeyRef, mk.Fingerprint
		d.audit.Action(op, fields, nil)
		d.log.Printf("main key v%d (%s, %s) is current", mk.Version, mk.Provider, mk.KeyRef)
		return d.mainKeys()
	case control.OpKMSRewrap:
		n, err := d.ring.Rewrap(ctx)
		d.audit.Action(op, map[string]any{"rewrapped": n}, err)
		if err != nil {
			return nil, err
		}
		return d.mainKeys()
	case control.OpKMSRetire:
		err := d.store.RetireMainKey(a.Version)
		d.audit.Action(op, map[string]any{"main_version": a.Version}, err)
		if err != nil {
			return nil, err
		}
		return d.mainKeys()
	}
	return d.mainKeys()
}

func (d *daemon) checkPassphrase(pass []byte) error {
	mks, err := d.store.MainKeys()
	if err != nil {
		return err
	}
	var sys []*keystore.MainKey
	for _, mk := range mks {
		if mk.Provider == keystore.KindSystem && mk.State == keystore.StateActive {
			sys = append(sys, mk)
		}
	}
	if len(sys) == 0 {
		return nil
	}
	if len(pass) == 0 {
		return fmt.Errorf("a system main key needs the passphrase (--passphrase-file or EZFS_PASSPHRASE)")
	}
	p, err := keystore.UnlockSystem(sys, pass)
	if err != nil {
		return err
	}
	return p.Close()
}

func (d *daemon) mainKeys() ([]control.MainKeyInfo, error) {
	mks, err := d.store.MainKeys()
	if err != nil {
		return nil, err
	}
	cur, err := d.store.CurrentMainKey()
	if err != nil {
		return nil, err
	}
	zks, err := d.store.ZoneKeys()
	if err != nil {
		return nil, err
	}
	wraps := map[uint32]int{}
	for _, zk := range zks {
		for _, v := range zk.Versions {
			wraps[v.MainVersion]++
		}
	}
	out := []control.MainKeyInfo{}
	for _, mk := range mks {
		out = append(out, control.MainKeyInfo{
			Version: mk.Version, Provider: mk.Provider, KeyRef: mk.KeyRef, Algorithm: mk.Algorithm,
			OAEPHash: mk.OAEPHash, Fingerprint: mk.Fingerprint, State: mk.State, Current: mk.Version == cur.Version,
			Created: mk.Created, ZoneKeyVersions: wraps[mk.Version],
		})
	}
	return out, nil
}
