// Package providers opens and enrols main key providers by kind (system, pkcs11,
// vault), so the daemon and the CLI never name a provider's package. It also creates
// keystores whose first main key comes from any provider.
package providers

import (
	"context"
	"fmt"
	"time"

	"github.com/ezfs/ezfs/crypto"
	"github.com/ezfs/ezfs/keystore"
	"github.com/ezfs/ezfs/keystore/pkcs11"
	"github.com/ezfs/ezfs/keystore/vault"
)

// Kinds lists the providers this build knows.
var Kinds = []string{keystore.KindSystem, pkcs11.Kind, vault.Kind}

// Secrets are what unlocking providers takes: never on a command line or in a log.
type Secrets struct {
	Passphrase []byte `json:"passphrase,omitempty"` // system
	PIN        []byte `json:"pin,omitempty"`        // pkcs11
}

// Zero overwrites the secrets.
func (s *Secrets) Zero() {
	crypto.Zero(s.Passphrase)
	crypto.Zero(s.PIN)
}

// Spec describes the main key a provider should hold (init, kms set).
type Spec struct {
	Provider     string `json:"provider"`
	PKCS11Module string `json:"pkcs11_module,omitempty"`
	PKCS11Token  string `json:"pkcs11_token,omitempty"`
	PKCS11Key    string `json:"pkcs11_key,omitempty"`
	// PKCS11KeyBase is the label of the first version, which later ones are named after.
	PKCS11KeyBase string `json:"-"`
	VaultKey      string `json:"vault_key,omitempty"`
	VaultMount    string `json:"vault_transit_mount,omitempty"`
	// Vault connection, when it is not the daemon's environment (VAULT_*).
	VaultAddress, VaultToken, VaultNamespace, VaultCACert string `json:"-"`
}

// Check reports a spec missing what its provider needs.
func (s Spec) Check() error {
	switch s.Provider {
	case keystore.KindSystem:
	case pkcs11.Kind:
		if s.PKCS11Module == "" || s.PKCS11Token == "" || s.PKCS11Key == "" {
			return fmt.Errorf("the pkcs11 provider needs --pkcs11-module, --pkcs11-token and --pkcs11-key")
		}
	case vault.Kind:
		if s.VaultKey == "" {
			return fmt.Errorf("the vault provider needs --vault-key")
		}
	default:
		return fmt.Errorf("unknown provider %q (known: system, pkcs11, vault)", s.Provider)
	}
	return nil
}

// Needs reports which secrets the active main key versions need.
func Needs(mks []*keystore.MainKey) (passphrase, pin bool) {
	for _, mk := range mks {
		if mk.State != keystore.StateActive {
			continue
		}
		passphrase = passphrase || mk.Provider == keystore.KindSystem
		pin = pin || mk.Provider == pkcs11.Kind
	}
	return passphrase, pin
}

// Open opens one provider per kind used by an active main key version and checks that
// each answers, so a mount with a provider down fails at once with the reason.
func Open(ctx context.Context, mks []*keystore.MainKey, sec Secrets) ([]keystore.Provider, error) {
	var out []keystore.Provider
	fail := func(err error) ([]keystore.Provider, error) {
		for _, p := range out {
			p.Close()
		}
		return nil, err
	}
	newest := map[string]*keystore.MainKey{}
	var system []*keystore.MainKey
	for _, mk := range mks {
		if mk.State != keystore.StateActive {
			continue
		}
		newest[mk.Provider] = mk
		if mk.Provider == keystore.KindSystem {
			system = append(system, mk)
		}
	}
	for kind, mk := range newest {
		var p keystore.Provider
		var err error
		switch kind {
		case keystore.KindSystem:
			if len(sec.Passphrase) == 0 {
				return fail(fmt.Errorf("the system main key needs a passphrase: %w", keystore.ErrPermission))
			}
			p, err = keystore.UnlockSystem(system, sec.Passphrase)
		case pkcs11.Kind:
			if len(sec.PIN) == 0 {
				return fail(fmt.Errorf("the pkcs11 main key needs a PIN (EZFS_EXTERNAL_KEY_PIN or --pin-file): %w", keystore.ErrPermission))
			}
			p, err = pkcs11.Open(pkcs11.Config{Module: mk.Settings["module"], Token: mk.Settings["token"], PIN: sec.PIN})
		case vault.Kind:
			p, err = vault.Open(vault.Config{Key: mk.Settings["key"], Mount: mk.Settings["mount"]})
		default:
			err = fmt.Errorf("main key v%d: unknown provider %q: %w", mk.Version, kind, keystore.ErrBadInput)
		}
		if err != nil {
			return fail(err)
		}
		out = append(out, p)
		sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err = p.Status(sctx)
		cancel()
		if err != nil {
			return fail(fmt.Errorf("provider %s: %w", kind, err))
		}
	}
	return out, nil
}

// Enroll creates main key version `version` as spec says, reusing an open provider of
// the same kind where it can serve it, and self-tests it. It returns the record (not
// yet stored) and the provider that serves it.
func Enroll(ctx context.Context, spec Spec, version uint32, sec Secrets, rotate bool, open map[string]keystore.Provider) (*keystore.MainKey, keystore.Provider, error) {
	if err := spec.Check(); err != nil {
		return nil, nil, fmt.Errorf("%v: %w", err, keystore.ErrBadInput)
	}
	var mk *keystore.MainKey
	var p keystore.Provider
	var err error
	switch spec.Provider {
	case keystore.KindSystem:
		if len(sec.Passphrase) == 0 {
			return nil, nil, fmt.Errorf("a system main key needs a passphrase: %w", keystore.ErrPermission)
		}
		if mk, err = keystore.NewSystemMainKey(sec.Passphrase, version); err != nil {
			return nil, nil, err
		}
		p, err = keystore.UnlockSystem([]*keystore.MainKey{mk}, sec.Passphrase)
	case pkcs11.Kind:
		hp, ok := open[pkcs11.Kind].(*pkcs11.Provider)
		if !ok || !hp.Serves(spec.PKCS11Module, spec.PKCS11Token) {
			if len(sec.PIN) == 0 {
				return nil, nil, fmt.Errorf("a pkcs11 main key needs a PIN (EZFS_EXTERNAL_KEY_PIN or --pin-file): %w", keystore.ErrPermission)
			}
			if hp, err = pkcs11.Open(pkcs11.Config{Module: spec.PKCS11Module, Token: spec.PKCS11Token, PIN: sec.PIN}); err != nil {
				return nil, nil, err
			}
		}
		p = hp
		mk, err = hp.Enroll(ctx, spec.PKCS11Key, spec.PKCS11KeyBase, version)
	case vault.Kind:
		var vp *vault.Provider
		vc := vault.Config{Key: spec.VaultKey, Mount: spec.VaultMount, Address: spec.VaultAddress,
			Token: spec.VaultToken, Namespace: spec.VaultNamespace, CACert: spec.VaultCACert}
		if vp, err = vault.Open(vc); err != nil {
			return nil, nil, err
		}
		p = vp
		mk, err = vp.Enroll(ctx, version, rotate)
	}
	if err == nil {
		err = keystore.SelfTest(ctx, p, mk)
	}
	if err != nil {
		if p != nil && p != open[spec.Provider] {
			p.Close()
		}
		return nil, nil, err
	}
	return mk, p, nil
}

// SpecOf is the spec that makes a new version like mk (kms rotate): same provider and
// place; on a token, a new key labelled after the version.
func SpecOf(mk *keystore.MainKey, next uint32) Spec {
	s := Spec{Provider: mk.Provider}
	switch mk.Provider {
	case pkcs11.Kind:
		base := mk.Settings["key_base"]
		if base == "" {
			base = mk.Settings["key"]
		}
		s.PKCS11Module, s.PKCS11Token, s.PKCS11KeyBase = mk.Settings["module"], mk.Settings["token"], base
		s.PKCS11Key = fmt.Sprintf("%s-v%d", base, next)
	case vault.Kind:
		s.VaultKey, s.VaultMount = mk.Settings["key"], mk.Settings["mount"]
	}
	return s
}

// Init creates a keystore in dir whose main key version 1 comes from spec.
func Init(ctx context.Context, dir string, spec Spec, sec Secrets) (*keystore.MainKey, error) {
	if err := spec.Check(); err != nil {
		return nil, fmt.Errorf("%v: %w", err, keystore.ErrBadInput)
	}
	if spec.Provider == keystore.KindSystem {
		return keystore.InitSystem(dir, sec.Passphrase)
	}
	if keystore.Exists(dir) {
		return nil, fmt.Errorf("keystore %s: %w", dir, keystore.ErrExists)
	}
	mk, p, err := Enroll(ctx, spec, 1, sec, false, nil)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	s, err := keystore.Create(dir)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if err := s.AddMainKey(mk); err != nil {
		return nil, err
	}
	a, err := keystore.OpenAudit(dir)
	if err != nil {
		return nil, err
	}
	a.Action("init", map[string]any{"provider": mk.Provider, "main_version": mk.Version, "key_ref": mk.KeyRef, "fingerprint": mk.Fingerprint}, nil)
	return mk, a.Close()
}
