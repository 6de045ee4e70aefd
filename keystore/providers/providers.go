// Package providers opens and enrols main key providers by kind (system, pkcs11,
// vault), so the daemon and the CLI never name a provider's package. It also creates
// keystores whose first main key comes from any provider.
package providers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ezfs/ezfs/crypto"
	"github.com/ezfs/ezfs/keystore"
	"github.com/ezfs/ezfs/keystore/pkcs11"
	"github.com/ezfs/ezfs/keystore/vault"
)

// Kinds lists the providers this build knows.
var Kinds = []string{keystore.KindSystem, pkcs11.Kind, vault.Kind}

// Secrets are what unlocking providers takes: never on a command line or in a log.
// Passphrase, PIN and VaultToken are the mount's own, for main key versions that
// record no credential source (the default key, as before named main keys); Env holds
// the values of the environment variables versions name as their source, read by the
// command that started the daemon.
type Secrets struct {
	Passphrase []byte            `json:"passphrase,omitempty"` // system
	PIN        []byte            `json:"pin,omitempty"`        // pkcs11
	VaultToken []byte            `json:"vault_token,omitempty"`
	Env        map[string][]byte `json:"env,omitempty"`
}

// Zero overwrites the secrets.
func (s *Secrets) Zero() {
	crypto.Zero(s.Passphrase)
	crypto.Zero(s.PIN)
	crypto.Zero(s.VaultToken)
	for _, v := range s.Env {
		crypto.Zero(v)
	}
}

// Clone is a copy the caller zeroes independently.
func (s Secrets) Clone() Secrets {
	out := Secrets{Passphrase: bytes.Clone(s.Passphrase), PIN: bytes.Clone(s.PIN), VaultToken: bytes.Clone(s.VaultToken)}
	if len(s.Env) > 0 {
		out.Env = map[string][]byte{}
		for k, v := range s.Env {
			out.Env[k] = bytes.Clone(v)
		}
	}
	return out
}

// ErrNoCredential is a credential source that gives nothing.
var ErrNoCredential = errors.New("no credential")

// Credential reads the secret of a provider: from src when the main key version names
// one, else the mount's own (fallback). The caller zeroes the result.
func (s Secrets) Credential(src *keystore.Credential, fallback []byte, what string) ([]byte, error) {
	var b []byte
	switch {
	case src.None():
		b = bytes.Clone(fallback)
	case src.Systemd != "":
		dir := os.Getenv("CREDENTIALS_DIRECTORY")
		if dir == "" {
			return nil, fmt.Errorf("%s from %s: $CREDENTIALS_DIRECTORY is not set (is ezfs mount run by a systemd unit with LoadCredential=%s?): %w",
				what, src, src.Systemd, keystore.ErrPermission)
		}
		raw, err := os.ReadFile(filepath.Join(dir, src.Systemd))
		if err != nil {
			return nil, fmt.Errorf("%s from %s: %v: %w", what, src, err, keystore.ErrPermission)
		}
		b = bytes.TrimRight(raw, "\r\n")
	case src.File != "":
		raw, err := os.ReadFile(src.File)
		if err != nil {
			return nil, fmt.Errorf("%s from %s: %v: %w", what, src, err, keystore.ErrPermission)
		}
		b = bytes.TrimRight(raw, "\r\n")
	default:
		b = bytes.Clone(s.Env[src.Env])
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("%s from %s: %w: %w", what, src, ErrNoCredential, keystore.ErrPermission)
	}
	return b, nil
}

// Spec describes the main key version a provider should hold (init, kms create, set,
// rotate).
type Spec struct {
	Name         string `json:"name,omitempty"` // the main key; "" for the default
	Provider     string `json:"provider"`
	PKCS11Module string `json:"pkcs11_module,omitempty"`
	PKCS11Token  string `json:"pkcs11_token,omitempty"`
	PKCS11Key    string `json:"pkcs11_key,omitempty"`
	// PKCS11KeyBase is the label of the first version, which later ones are named after.
	PKCS11KeyBase string `json:"-"`
	VaultKey      string `json:"vault_key,omitempty"`
	VaultMount    string `json:"vault_transit_mount,omitempty"`
	// The Vault server, recorded with the version (the daemon's environment is not
	// consulted for it).
	VaultAddress   string `json:"vault_addr,omitempty"`
	VaultNamespace string `json:"vault_namespace,omitempty"`
	VaultCACert    string `json:"vault_cacert,omitempty"`
	// VaultAuth is "token" (the default) or "approle": then VaultRoleID (recorded) and
	// the secret ID from Credential, logged in at auth/VaultAuthMount ("approle").
	VaultAuth      string `json:"vault_auth,omitempty"`
	VaultRoleID    string `json:"vault_role_id,omitempty"`
	VaultAuthMount string `json:"vault_auth_mount,omitempty"`
	// Credential is where the version's secret comes from; nil: the mount's own.
	Credential *keystore.Credential `json:"credential,omitempty"`
}

// Check reports a spec missing what its provider needs.
func (s Spec) Check() error {
	if s.Name != "" {
		if err := keystore.CheckMainKeyName(s.Name); err != nil {
			return err
		}
	}
	if c := s.Credential; c != nil && c.Systemd != "" && (strings.ContainsRune(c.Systemd, '/') || c.Systemd == "." || c.Systemd == "..") {
		return fmt.Errorf("systemd credential name %q: a name, not a path: %w", c.Systemd, keystore.ErrBadInput)
	}
	switch s.Provider {
	case keystore.KindSystem:
	case pkcs11.Kind:
		if s.PKCS11Module == "" || s.PKCS11Token == "" || s.PKCS11Key == "" {
			return fmt.Errorf("the pkcs11 provider needs --pkcs11-module, --pkcs11-token and --pkcs11-key: %w", keystore.ErrBadInput)
		}
	case vault.Kind:
		if s.VaultKey == "" {
			return fmt.Errorf("the vault provider needs --vault-key: %w", keystore.ErrBadInput)
		}
		switch s.VaultAuth {
		case "", vault.AuthToken:
			if s.VaultRoleID != "" {
				return fmt.Errorf("--vault-role-id needs --vault-auth approle: %w", keystore.ErrBadInput)
			}
		case vault.AuthAppRole:
			if s.VaultRoleID == "" {
				return fmt.Errorf("--vault-auth approle needs --vault-role-id: %w", keystore.ErrBadInput)
			}
			if s.Credential.None() {
				return fmt.Errorf("--vault-auth approle needs the secret ID's source: --vault-secret-id-file or --credential-env: %w", keystore.ErrBadInput)
			}
		default:
			return fmt.Errorf("unknown --vault-auth %q (token or approle): %w", s.VaultAuth, keystore.ErrBadInput)
		}
	default:
		return fmt.Errorf("unknown provider %q (known: system, pkcs11, vault): %w", s.Provider, keystore.ErrBadInput)
	}
	return nil
}

// Needs reports which of the mount's own secrets the active main key versions need:
// those of versions that record no credential source of their own.
func Needs(mks []*keystore.MainKey) (passphrase, pin bool) {
	for _, mk := range mks {
		if mk.State != keystore.StateActive || mk.Credential != nil {
			continue
		}
		passphrase = passphrase || mk.Provider == keystore.KindSystem
		pin = pin || mk.Provider == pkcs11.Kind
	}
	return passphrase, pin
}

// EnvNames lists the environment variables the active main key versions take their
// credentials from.
func EnvNames(mks []*keystore.MainKey) []string {
	seen := map[string]bool{}
	var out []string
	for _, mk := range mks {
		if mk.State == keystore.StateActive && mk.Credential != nil && mk.Credential.Env != "" && !seen[mk.Credential.Env] {
			seen[mk.Credential.Env] = true
			out = append(out, mk.Credential.Env)
		}
	}
	return out
}

// Opener builds each main key version's provider instance from what it recorded.
func Opener(sec Secrets) keystore.Opener {
	return func(ctx context.Context, mk *keystore.MainKey) (keystore.Provider, error) {
		return OpenVersion(ctx, mk, sec)
	}
}

// OpenVersion opens the provider instance main key version mk recorded.
func OpenVersion(ctx context.Context, mk *keystore.MainKey, sec Secrets) (keystore.Provider, error) {
	switch mk.Provider {
	case keystore.KindSystem:
		pass, err := sec.Credential(mk.Credential, sec.Passphrase, "the passphrase of main key "+mk.Name)
		if err != nil {
			return nil, err
		}
		defer crypto.Zero(pass)
		return keystore.UnlockSystem([]*keystore.MainKey{mk}, pass)
	case pkcs11.Kind:
		pin, err := sec.Credential(mk.Credential, sec.PIN, "the PIN of main key "+mk.Name+" (EZFS_EXTERNAL_KEY_PIN or --pin-file)")
		if err != nil {
			return nil, err
		}
		defer crypto.Zero(pin)
		return pkcs11.Open(pkcs11.Config{Module: mk.Settings["module"], Token: mk.Settings["token"], PIN: pin})
	case vault.Kind:
		if mk.Settings["auth"] == vault.AuthAppRole {
			cfg := vaultConfig(mk.Settings, nil)
			cfg.SecretID = secretID(sec, mk.Credential, "the AppRole secret ID of main key "+mk.Name)
			return loggedIn(ctx, cfg)
		}
		token, err := sec.Credential(mk.Credential, sec.VaultToken, "the Vault token of main key "+mk.Name+" (VAULT_TOKEN)")
		if err != nil {
			return nil, err
		}
		defer crypto.Zero(token)
		cfg := vaultConfig(mk.Settings, token)
		if mk.Credential.Reread() {
			cfg.TokenSource = secretID(sec, mk.Credential, "the Vault token of main key "+mk.Name)
		}
		return vault.Open(cfg)
	}
	return nil, fmt.Errorf("main key %s: unknown provider %q: %w", mk.Ref(), mk.Provider, keystore.ErrBadInput)
}

// vaultConfig is the connection a vault version recorded.
func vaultConfig(set map[string]string, token []byte) vault.Config {
	return vault.Config{Key: set["key"], Mount: set["mount"], Address: set["address"],
		Namespace: set["namespace"], CACert: set["ca_cert"], Token: string(token),
		Auth: set["auth"], RoleID: set["role_id"], AuthMount: set["auth_mount"]}
}

// secretID reads a credential from src each time it is called (an AppRole secret ID
// at every login, a token file when a call is refused): a file again each time (so a
// secret replaced in the file serves without a remount), a variable's value from sec.
// There is no mount-wide fallback.
func secretID(sec Secrets, src *keystore.Credential, what string) func() ([]byte, error) {
	var own Secrets // only the variable's value, kept past the caller's zeroing of sec
	if src != nil && src.Env != "" {
		own.Env = map[string][]byte{src.Env: bytes.Clone(sec.Env[src.Env])}
	}
	return func() ([]byte, error) { return own.Credential(src, nil, what) }
}

// loggedIn opens an AppRole provider and logs in, so that a refused secret ID is
// known when the instance is built.
func loggedIn(ctx context.Context, cfg vault.Config) (*vault.Provider, error) {
	vp, err := vault.Open(cfg)
	if err != nil {
		return nil, err
	}
	if err := vp.Login(ctx); err != nil {
		vp.Close()
		return nil, err
	}
	return vp, nil
}

// Enroll creates version `version` of main key spec.Name as spec says and self-tests
// it. It returns the record (not yet stored) and the provider instance that serves it.
func Enroll(ctx context.Context, spec Spec, version uint32, sec Secrets, rotate bool) (*keystore.MainKey, keystore.Provider, error) {
	if err := spec.Check(); err != nil {
		return nil, nil, err
	}
	if spec.Name == "" {
		spec.Name = keystore.DefaultMain
	}
	mk, p, err := enroll(ctx, spec, version, sec, rotate)
	if err == nil {
		mk.Name, mk.Credential = spec.Name, spec.Credential
		err = keystore.SelfTest(ctx, p, mk)
	}
	if err != nil {
		if p != nil {
			p.Close()
		}
		return nil, nil, err
	}
	return mk, p, nil
}

func enroll(ctx context.Context, spec Spec, version uint32, sec Secrets, rotate bool) (*keystore.MainKey, keystore.Provider, error) {
	switch spec.Provider {
	case keystore.KindSystem:
		pass, err := sec.Credential(spec.Credential, sec.Passphrase, "a system main key's passphrase")
		if err != nil {
			return nil, nil, err
		}
		defer crypto.Zero(pass)
		mk, err := keystore.NewSystemMainKey(pass, spec.Name, version)
		if err != nil {
			return nil, nil, err
		}
		p, err := keystore.UnlockSystem([]*keystore.MainKey{mk}, pass)
		return mk, p, err
	case pkcs11.Kind:
		pin, err := sec.Credential(spec.Credential, sec.PIN, "a pkcs11 main key's PIN (EZFS_EXTERNAL_KEY_PIN or --pin-file)")
		if err != nil {
			return nil, nil, err
		}
		defer crypto.Zero(pin)
		hp, err := pkcs11.Open(pkcs11.Config{Module: spec.PKCS11Module, Token: spec.PKCS11Token, PIN: pin})
		if err != nil {
			return nil, nil, err
		}
		mk, err := hp.Enroll(ctx, spec.PKCS11Key, spec.PKCS11KeyBase, version)
		return mk, hp, err
	}
	cfg := vault.Config{Key: spec.VaultKey, Mount: spec.VaultMount, Address: spec.VaultAddress,
		Namespace: spec.VaultNamespace, CACert: spec.VaultCACert,
		Auth: spec.VaultAuth, RoleID: spec.VaultRoleID, AuthMount: spec.VaultAuthMount}
	var vp *vault.Provider
	var err error
	if spec.VaultAuth == vault.AuthAppRole {
		cfg.SecretID = secretID(sec, spec.Credential, "the AppRole secret ID of main key "+spec.Name)
		vp, err = loggedIn(ctx, cfg)
	} else {
		token, terr := sec.Credential(spec.Credential, sec.VaultToken, "a vault main key's token (VAULT_TOKEN or --vault-token-file)")
		if terr != nil {
			return nil, nil, terr
		}
		defer crypto.Zero(token)
		cfg.Token = string(token)
		if spec.Credential.Reread() {
			cfg.TokenSource = secretID(sec, spec.Credential, "the Vault token of main key "+spec.Name)
		}
		vp, err = vault.Open(cfg)
	}
	if err != nil {
		return nil, nil, err
	}
	mk, err := vp.Enroll(ctx, version, rotate)
	return mk, vp, err
}

// SpecOf is the spec that makes a new version like mk (kms rotate): same main key,
// provider, place and credential; on a token, a new key labelled after the version.
func SpecOf(mk *keystore.MainKey, next uint32) Spec {
	s := Spec{Name: mk.Name, Provider: mk.Provider, Credential: mk.Credential}
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
		s.VaultAddress, s.VaultNamespace, s.VaultCACert = mk.Settings["address"], mk.Settings["namespace"], mk.Settings["ca_cert"]
		if mk.Settings["auth"] == vault.AuthAppRole {
			s.VaultAuth, s.VaultRoleID, s.VaultAuthMount = vault.AuthAppRole, mk.Settings["role_id"], mk.Settings["auth_mount"]
		}
	}
	return s
}

// Init creates a keystore in dir whose main key `default` v1 comes from spec.
func Init(ctx context.Context, dir string, spec Spec, sec Secrets) (*keystore.MainKey, error) {
	if err := spec.Check(); err != nil {
		return nil, err
	}
	if spec.Provider == keystore.KindSystem && spec.Credential == nil {
		return keystore.InitSystem(dir, sec.Passphrase)
	}
	if keystore.Exists(dir) {
		return nil, fmt.Errorf("keystore %s: %w", dir, keystore.ErrExists)
	}
	spec.Name = keystore.DefaultMain
	mk, p, err := Enroll(ctx, spec, 1, sec, false)
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
	a.Action("init", map[string]any{"main_key": mk.Name, "provider": mk.Provider, "main_version": mk.Version, "key_ref": mk.KeyRef, "fingerprint": mk.Fingerprint}, nil)
	return mk, a.Close()
}
