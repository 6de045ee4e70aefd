package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ezfs/ezfs/control"
	"github.com/ezfs/ezfs/keystore"
	"github.com/ezfs/ezfs/keystore/providers"
)

// ErrDefaultDown is a mount whose default main key does not answer.
var ErrDefaultDown = errors.New("the default main key does not answer")

func mainName(n string) string {
	if n == "" {
		return keystore.DefaultMain
	}
	return n
}

func (d *daemon) kms(ctx context.Context, op string, a control.KMSArgs) (any, error) {
	d.adminMu.Lock()
	defer d.adminMu.Unlock()
	name := mainName(a.Name)
	fields := map[string]any{"main_key": name}
	var err error
	switch op {
	case control.OpKMSCreate, control.OpKMSRotate, control.OpKMSSet:
		err = d.enrol(ctx, op, name, a, fields)
	case control.OpKMSRewrap:
		var n int
		n, err = d.ring.Rewrap(ctx, name)
		fields["rewrapped"] = n
	case control.OpKMSRetire:
		ref := keystore.MainRef{Name: name, Version: a.Version}
		fields["main_version"] = a.Version
		if err = d.store.RetireMainKey(ref); err == nil {
			d.applyChange() // its provider instance closed (applyMains)
		}
	case control.OpKMSCheck:
		err = d.checkMainKeys(ctx, a.Name)
	case control.OpKMSShow:
		return d.mainKeys(a.Name)
	}
	if op != control.OpKMSCheck {
		d.audit.Action(op, fields, err)
	}
	if err != nil {
		return nil, err
	}
	return d.mainKeys(a.Name)
}

// enrol makes the next version of main key name: a new main key (create), one like
// its current version (rotate) or one with another provider (set).
func (d *daemon) enrol(ctx context.Context, op, name string, a control.KMSArgs, fields map[string]any) error {
	_, err := d.store.CurrentMainKey(name)
	switch {
	case op == control.OpKMSCreate && err == nil:
		return fmt.Errorf("main key %q: %w", name, keystore.ErrExists)
	case op != control.OpKMSCreate && err != nil:
		return err
	}
	next, err := d.store.NextMainVersion(name)
	if err != nil {
		return err
	}
	spec, err := d.specFor(op, name, next, a)
	if err != nil {
		return err
	}
	fields["provider"], fields["main_version"] = spec.Provider, next
	sec := d.adminSecrets(a)
	defer sec.Zero()
	mk, p, err := providers.Enroll(ctx, spec, next, sec, op == control.OpKMSRotate)
	if err != nil {
		return err
	}
	if err := d.store.AddMainKey(mk); err != nil {
		p.Close()
		return err
	}
	d.ring.Adopt(mk, p)
	fields["key_ref"], fields["fingerprint"], fields["credential"] = mk.KeyRef, mk.Fingerprint, mk.Credential.String()
	d.log.Printf("main key %s (%s, %s) is current", mk.Ref(), mk.Provider, mk.KeyRef)
	return nil
}

// specFor is what the next version of main key name should be.
func (d *daemon) specFor(op, name string, next uint32, a control.KMSArgs) (providers.Spec, error) {
	if op == control.OpKMSRotate {
		cur, err := d.store.CurrentMainKey(name)
		if err != nil {
			return providers.Spec{}, err
		}
		return providers.SpecOf(cur, next), nil
	}
	spec := providers.Spec{Name: name, Provider: a.Provider, PKCS11Module: a.PKCS11Module, PKCS11Token: a.PKCS11Token,
		PKCS11Key: a.PKCS11Key, VaultKey: a.VaultKey, VaultMount: a.VaultMount,
		VaultAddress: a.VaultAddress, VaultNamespace: a.VaultNamespace, VaultCACert: a.VaultCACert,
		VaultAuth: a.VaultAuth, VaultRoleID: a.VaultRoleID, VaultAuthMount: a.VaultAuthMount}
	if c := (&keystore.Credential{File: a.CredentialFile, Env: a.CredentialEnv, Systemd: a.CredentialSystemd}); !c.None() {
		spec.Credential = c
	}
	if spec.Provider == keystore.KindSystem && spec.Credential == nil {
		// A new sealed key under the mount's passphrase must open with it.
		if err := d.checkPassphrase(a.Passphrase); err != nil {
			return spec, err
		}
	}
	return spec, spec.Check()
}

// adminSecrets are the secrets an admin command brought: the administrator's for the
// new version, and, for a credential named by an environment variable, its value.
func (d *daemon) adminSecrets(a control.KMSArgs) providers.Secrets {
	sec := providers.Secrets{Passphrase: clone(a.Passphrase), PIN: clone(a.PIN), VaultToken: []byte(a.VaultToken)}
	if a.CredentialEnv != "" {
		v := a.PIN
		if len(v) == 0 {
			v = []byte(a.VaultToken)
		}
		if len(v) == 0 {
			v = a.Passphrase
		}
		sec.Env = map[string][]byte{a.CredentialEnv: clone(v)}
	}
	return sec
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

func (d *daemon) checkPassphrase(pass []byte) error {
	mks, err := d.store.MainKeys()
	if err != nil {
		return err
	}
	var sys []*keystore.MainKey
	for _, mk := range mks {
		if mk.Provider == keystore.KindSystem && mk.State == keystore.StateActive && mk.Credential == nil {
			sys = append(sys, mk)
		}
	}
	if len(sys) == 0 {
		return nil
	}
	if len(pass) == 0 {
		return fmt.Errorf("a system main key needs the passphrase (--passphrase-file or EZFS_PASSPHRASE): %w", keystore.ErrPermission)
	}
	p, err := keystore.UnlockSystem(sys, pass)
	if err != nil {
		return err
	}
	return p.Close()
}

// checkMainKeys asks the provider of every active version of main key name (all main
// keys when "") now. Only the default key's current version failing is an error; the
// others are logged, and their zones answer EIO until they answer again.
func (d *daemon) checkMainKeys(ctx context.Context, name string) error {
	mks, err := d.store.MainKeys()
	if err != nil {
		return err
	}
	def, err := d.store.CurrentMainKey(keystore.DefaultMain)
	if err != nil {
		return err
	}
	for _, mk := range mks {
		if mk.State != keystore.StateActive || (name != "" && mk.Name != name) {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := d.ring.CheckNow(sctx, mk)
		cancel()
		switch {
		case err != nil && mk.Ref() == def.Ref():
			return fmt.Errorf("%w: main key %s (%s): %w", ErrDefaultDown, mk.Ref(), mk.Provider, err)
		case err != nil:
			d.log.Printf("WARNING: main key %s (%s, %s) does not answer: %v; the zones it protects answer EIO (EACCES for a refused credential) until it does", mk.Ref(), mk.Provider, mk.KeyRef, err)
		}
	}
	return nil
}

// mainKeys describes every version of main key name (every main key when "").
func (d *daemon) mainKeys(name string) ([]control.MainKeyInfo, error) {
	mks, err := d.store.MainKeys()
	if err != nil {
		return nil, err
	}
	zks, err := d.store.ZoneKeys()
	if err != nil {
		return nil, err
	}
	wraps := map[keystore.MainRef][]string{}
	for _, zk := range zks {
		for _, v := range zk.Versions {
			wraps[v.Main()] = append(wraps[v.Main()], fmt.Sprintf("%s@%d", zk.Name, v.Version))
		}
	}
	out := []control.MainKeyInfo{}
	for _, mk := range mks {
		if name != "" && mk.Name != name {
			continue
		}
		cur, err := d.store.CurrentMainKey(mk.Name)
		if err != nil {
			return nil, err
		}
		info := control.MainKeyInfo{
			Name: mk.Name, Version: mk.Version, Provider: mk.Provider, KeyRef: mk.KeyRef, Algorithm: mk.Algorithm,
			OAEPHash: mk.OAEPHash, Fingerprint: mk.Fingerprint, State: mk.State, Current: mk.Version == cur.Version,
			Created: mk.Created, ZoneKeyVersions: len(wraps[mk.Ref()]), ZoneKeys: append([]string{}, wraps[mk.Ref()]...),
			Settings: publicSettings(mk.Settings), Credential: mk.Credential.String(), Origin: mk.Origin,
		}
		if h, ok := d.ring.Health(mk.Ref()); ok {
			info.Health = &control.ProviderStatus{Kind: mk.Provider, OK: h.OK, Error: h.Error, MainKey: mk.Name, MainVersion: mk.Version, Since: h.Since}
		}
		out = append(out, info)
	}
	if name != "" && len(out) == 0 {
		return nil, Reword(keystore.ErrKeyNotFound, "main key %q does not exist", name)
	}
	return out, nil
}

// publicSettings drops the empty ones.
func publicSettings(set map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range set {
		if v != "" {
			out[k] = v
		}
	}
	return out
}
