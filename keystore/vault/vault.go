// Package vault is the main key provider for HashiCorp Vault's Transit engine: each main
// key version is a version of a Transit RSA key. Wrapping uses its public key locally;
// unwrapping is a transit/decrypt call. No private key is ever read out of Vault.
package vault

import (
	"context"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ezfs/ezfs/crypto"
	"github.com/ezfs/ezfs/keystore"
	"github.com/hashicorp/go-cleanhttp"
	"github.com/hashicorp/vault/api"
)

// Kind is the provider name in the keystore and on the command line.
const Kind = "vault"

// KeyType is the Transit key type created when the named key does not exist.
const KeyType = "rsa-3072"

// Ways to authenticate, as a version records them in its "auth" setting.
const (
	AuthToken   = "token"   // a token from the version's credential source (or VAULT_TOKEN)
	AuthAppRole = "approle" // a role ID (recorded) and a secret ID (from the credential source)
)

// Config is one Transit key on one Vault server, as a main key version records it.
// Nothing comes from the environment (VAULT_ADDR and the like): two main keys on two
// servers work side by side. The command line fills an empty Address from VAULT_ADDR
// when a version is made, and the daemon passes the mount's VAULT_TOKEN for versions
// that record no credential source.
type Config struct {
	Key   string
	Mount string // the Transit engine's mount path, "transit" by default

	Address, Token, Namespace, CACert string

	// Auth is AuthToken (Token; the default) or AuthAppRole: log in at
	// auth/AuthMount/login (AuthMount "approle" by default) with RoleID and the secret
	// ID SecretID returns, which is called at every login (a file is read again, so a
	// secret ID replaced in it is used without a remount). The caller zeroes nothing:
	// the provider zeroes what SecretID returns.
	Auth, RoleID, AuthMount string
	SecretID                func() ([]byte, error)
	// TokenSource, when set (a token from a file), is read again when a call is
	// refused: a token replaced in its file (by an operator, or a Vault Agent sink)
	// serves without a remount.
	TokenSource func() ([]byte, error)
}

// Provider talks to one Vault server. Safe for concurrent use.
type Provider struct {
	c   *api.Client
	cfg Config

	// AppRole only: anon is a client without a token, for the login; mu serialises
	// logins; renewAt is when the token should be replaced (two thirds of its TTL).
	anon    *api.Client
	mu      sync.Mutex
	renewAt time.Time // guarded by mu; zero: not logged in
}

// Open builds a client for cfg's server; it does not contact the server (an AppRole
// provider logs in on its first call, or when Login is called).
func Open(cfg Config) (*Provider, error) {
	if cfg.Mount == "" {
		cfg.Mount = "transit"
	}
	if cfg.Auth == "" {
		cfg.Auth = AuthToken
	}
	if cfg.Address == "" {
		return nil, fmt.Errorf("vault: no server address (--vault-addr or VAULT_ADDR): %w", keystore.ErrBadInput)
	}
	switch cfg.Auth {
	case AuthToken:
		if cfg.Token == "" {
			return nil, fmt.Errorf("vault: no token for %s: %w", cfg.Address, keystore.ErrPermission)
		}
	case AuthAppRole:
		if cfg.RoleID == "" || cfg.SecretID == nil {
			return nil, fmt.Errorf("vault: AppRole at %s needs a role ID and a secret ID source: %w", cfg.Address, keystore.ErrBadInput)
		}
		if cfg.AuthMount == "" {
			cfg.AuthMount = "approle"
		}
		cfg.Token = ""
	default:
		return nil, fmt.Errorf("vault: unknown auth method %q (token or approle): %w", cfg.Auth, keystore.ErrBadInput)
	}
	c, err := newClient(cfg, cfg.Token)
	if err != nil {
		return nil, err
	}
	p := &Provider{c: c, cfg: cfg}
	if cfg.Auth == AuthAppRole {
		if p.anon, err = newClient(cfg, ""); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// newClient is a client of cfg's server with token (none when "").
func newClient(cfg Config, token string) (*api.Client, error) {
	vc, err := serverConfig(cfg)
	if err != nil {
		return nil, err
	}
	c, err := api.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vault: %v: %w", err, keystore.ErrBadInput)
	}
	// NewClient takes VAULT_TOKEN and VAULT_NAMESPACE from the environment: override.
	if token != "" {
		c.SetToken(token)
	} else {
		c.ClearToken()
	}
	if cfg.Namespace != "" {
		c.SetNamespace(cfg.Namespace)
	} else {
		c.ClearNamespace()
	}
	return c, nil
}

// Login logs in with the AppRole now (a no-op for a token provider), so that a wrong
// secret ID is known when the provider is built.
func (p *Provider) Login(ctx context.Context) error {
	if p.cfg.Auth != AuthAppRole {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.loginLocked(ctx)
}

func (p *Provider) loginLocked(ctx context.Context) error {
	what := fmt.Sprintf("AppRole login at %s/v1/auth/%s (role ID %s)", p.c.Address(), p.cfg.AuthMount, p.cfg.RoleID)
	sid, err := p.cfg.SecretID()
	if err != nil {
		return fmt.Errorf("vault: %s: the secret ID: %w", what, err)
	}
	defer crypto.Zero(sid)
	start := time.Now()
	sec, err := p.anon.Logical().WriteWithContext(ctx, "auth/"+p.cfg.AuthMount+"/login",
		map[string]any{"role_id": p.cfg.RoleID, "secret_id": string(sid)})
	var re *api.ResponseError
	if errors.As(err, &re) && (re.StatusCode == http.StatusBadRequest || re.StatusCode == http.StatusForbidden) {
		// Vault answers a wrong role or secret ID with 400: a refused credential.
		return fmt.Errorf("vault: %s: permission denied (%s): %w", what, strings.Join(re.Errors, "; "), keystore.ErrPermission)
	}
	if err != nil {
		return classify(what, err)
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return fmt.Errorf("vault: %s: no token in the answer: %w", what, keystore.ErrUnavailable)
	}
	p.c.SetToken(sec.Auth.ClientToken)
	p.renewAt = time.Time{}.Add(1<<63 - 1) // a token without a TTL never expires
	if ttl := time.Duration(sec.Auth.LeaseDuration) * time.Second; ttl > 0 {
		p.renewAt = start.Add(ttl * 2 / 3)
	}
	return nil
}

// reread takes the token from its source again; true if it changed.
func (p *Provider) reread() bool {
	tok, err := p.cfg.TokenSource()
	if err != nil {
		return false
	}
	defer crypto.Zero(tok)
	p.mu.Lock()
	defer p.mu.Unlock()
	if string(tok) == p.c.Token() {
		return false
	}
	p.c.SetToken(string(tok))
	return true
}

// do runs fn, a call with the provider's token. An AppRole provider logs in first when
// it has no token or its token is near its end, and logs in again once when fn is
// refused (the token expired early or was revoked).
func (p *Provider) do(ctx context.Context, fn func() error) error {
	if p.cfg.Auth != AuthAppRole {
		err := fn()
		if errors.Is(err, keystore.ErrPermission) && p.cfg.TokenSource != nil && p.reread() {
			err = fn()
		}
		return err
	}
	p.mu.Lock()
	if p.renewAt.IsZero() || !time.Now().Before(p.renewAt) {
		if err := p.loginLocked(ctx); err != nil {
			p.mu.Unlock()
			return err
		}
	}
	used := p.c.Token()
	p.mu.Unlock()
	err := fn()
	if !errors.Is(err, keystore.ErrPermission) {
		return err
	}
	p.mu.Lock()
	if p.c.Token() == used { // no other call logged in meanwhile
		if lerr := p.loginLocked(ctx); lerr != nil {
			p.mu.Unlock()
			return lerr
		}
	}
	p.mu.Unlock()
	return fn()
}

// serverConfig is api.DefaultConfig without its environment: address and CA are cfg's.
func serverConfig(cfg Config) (*api.Config, error) {
	hc := cleanhttp.DefaultPooledClient()
	tr := hc.Transport.(*http.Transport)
	tr.TLSHandshakeTimeout = 10 * time.Second
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	vc := &api.Config{Address: cfg.Address, HttpClient: hc, Timeout: 10 * time.Second,
		MaxRetries: 0} // the keyring retries with its own backoff
	if cfg.CACert != "" {
		if err := vc.ConfigureTLS(&api.TLSConfig{CACert: cfg.CACert}); err != nil {
			return nil, fmt.Errorf("vault: CA %s: %v: %w", cfg.CACert, err, keystore.ErrBadInput)
		}
	}
	return vc, nil
}

// Address is the server the provider talks to.
func (p *Provider) Address() string { return p.c.Address() }

// Kind implements keystore.Provider.
func (p *Provider) Kind() string { return Kind }

// Status implements keystore.Provider: reachable, unsealed, and the token valid.
func (p *Provider) Status(ctx context.Context) error {
	st, err := p.c.Sys().SealStatusWithContext(ctx)
	if err != nil {
		return classify("status", err)
	}
	if st.Sealed {
		return fmt.Errorf("vault at %s is sealed: %w", p.c.Address(), keystore.ErrUnavailable)
	}
	// The token too: a revoked or expired one is the tenant's outage as much as a seal.
	return p.do(ctx, func() error {
		if _, err := p.c.Auth().Token().LookupSelfWithContext(ctx); err != nil {
			return classify("token of "+p.c.Address(), err)
		}
		return nil
	})
}

// Decrypt implements keystore.Provider with transit/decrypt, as vault:vN: ciphertext.
func (p *Provider) Decrypt(ctx context.Context, mk *keystore.MainKey, ciphertext []byte) ([]byte, error) {
	key, mount := mk.Settings["key"], mk.Settings["mount"]
	v := mk.Settings["transit_version"]
	var sec *api.Secret
	err := p.do(ctx, func() error {
		var err error
		sec, err = p.c.Logical().WriteWithContext(ctx, mount+"/decrypt/"+key, map[string]any{
			"ciphertext": "vault:v" + v + ":" + base64.StdEncoding.EncodeToString(ciphertext),
		})
		if err != nil {
			return classify("decrypt with "+mount+"/keys/"+key, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if sec == nil || sec.Data == nil {
		return nil, fmt.Errorf("vault: decrypt with %s: empty answer: %w", key, keystore.ErrUnavailable)
	}
	s, _ := sec.Data["plaintext"].(string)
	out, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("vault: decrypt with %s: %v: %w", key, err, keystore.ErrInvalidCiphertext)
	}
	return out, nil
}

// Enroll makes main key version `version` from the newest version of the Transit key,
// creating the key (rsa-3072) if it does not exist, or rotating it first if rotate.
func (p *Provider) Enroll(ctx context.Context, version uint32, rotate bool) (*keystore.MainKey, error) {
	var mk *keystore.MainKey
	err := p.do(ctx, func() error {
		var err error
		mk, err = p.enroll(ctx, version, rotate)
		return err
	})
	return mk, err
}

func (p *Provider) enroll(ctx context.Context, version uint32, rotate bool) (*keystore.MainKey, error) {
	path := p.cfg.Mount + "/keys/" + p.cfg.Key
	sec, err := p.c.Logical().ReadWithContext(ctx, path)
	if err != nil {
		return nil, classify("read "+path, err)
	}
	switch {
	case sec == nil:
		if _, err := p.c.Logical().WriteWithContext(ctx, path, map[string]any{"type": KeyType}); err != nil {
			return nil, classify("create "+path, err)
		}
	case rotate:
		if _, err := p.c.Logical().WriteWithContext(ctx, path+"/rotate", nil); err != nil {
			return nil, classify("rotate "+path, err)
		}
	}
	if sec, err = p.c.Logical().ReadWithContext(ctx, path); err != nil || sec == nil {
		return nil, classify("read "+path, err)
	}
	latest, pemKey, err := latestPublicKey(sec.Data)
	if err != nil {
		return nil, fmt.Errorf("vault: %s: %w", path, err)
	}
	blk, _ := pem.Decode([]byte(pemKey))
	if blk == nil {
		return nil, fmt.Errorf("vault: %s v%d: no PEM public key (is it an RSA key?): %w", path, latest, keystore.ErrBadInput)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	pub, ok := k.(*rsa.PublicKey)
	if err != nil || !ok {
		return nil, fmt.Errorf("vault: %s v%d: not an RSA public key: %w", path, latest, keystore.ErrBadInput)
	}
	fp, err := crypto.Fingerprint(pub)
	if err != nil {
		return nil, err
	}
	mk := &keystore.MainKey{
		Version: version, Provider: Kind,
		Settings: map[string]string{"key": p.cfg.Key, "mount": p.cfg.Mount, "transit_version": strconv.Itoa(latest),
			"address": p.c.Address(), "namespace": p.cfg.Namespace, "ca_cert": p.cfg.CACert, "auth": p.cfg.Auth},
		KeyRef:    fmt.Sprintf("%s %s v%d", p.c.Address(), path, latest),
		Algorithm: fmt.Sprintf("RSA-%d-OAEP", pub.N.BitLen()),
		// Transit decrypts RSA only with OAEP-SHA256 and an empty label.
		OAEPHash:  "SHA-256",
		PublicKey: blk.Bytes, Fingerprint: fp, State: keystore.StateActive, Created: time.Now().UTC(),
	}
	if p.cfg.Auth == AuthAppRole { // the role ID is no secret; the secret ID is never recorded
		mk.Settings["role_id"], mk.Settings["auth_mount"] = p.cfg.RoleID, p.cfg.AuthMount
	}
	return mk, nil
}

// HasNewer implements keystore.Rotating: the Transit key has a version newer than the
// one mk records.
func (p *Provider) HasNewer(ctx context.Context, mk *keystore.MainKey) (bool, error) {
	path := mk.Settings["mount"] + "/keys/" + mk.Settings["key"]
	var sec *api.Secret
	err := p.do(ctx, func() error {
		var err error
		if sec, err = p.c.Logical().ReadWithContext(ctx, path); err != nil || sec == nil {
			return classify("read "+path, err)
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	latest, err := toInt(sec.Data["latest_version"])
	if err != nil {
		return false, fmt.Errorf("vault: %s latest_version: %v: %w", path, err, keystore.ErrBadInput)
	}
	have, err := strconv.Atoi(mk.Settings["transit_version"])
	if err != nil {
		return false, fmt.Errorf("vault: main key %s records no Transit version: %w", mk.Ref(), keystore.ErrBadInput)
	}
	return latest > have, nil
}

func latestPublicKey(data map[string]any) (int, string, error) {
	latest, err := toInt(data["latest_version"])
	if err != nil {
		return 0, "", fmt.Errorf("latest_version: %v: %w", err, keystore.ErrBadInput)
	}
	keys, _ := data["keys"].(map[string]any)
	entry, _ := keys[strconv.Itoa(latest)].(map[string]any)
	pemKey, _ := entry["public_key"].(string)
	if pemKey == "" {
		return 0, "", fmt.Errorf("version %d has no public key (type %v; want an RSA key): %w", latest, data["type"], keystore.ErrBadInput)
	}
	return latest, pemKey, nil
}

func toInt(v any) (int, error) {
	switch x := v.(type) {
	case json.Number:
		n, err := x.Int64()
		return int(n), err
	case float64:
		return int(x), nil
	case int:
		return x, nil
	}
	return 0, fmt.Errorf("unexpected %T", v)
}

// Close implements keystore.Provider.
func (p *Provider) Close() error { return nil }

// classify wraps a Vault client error in the class the daemon maps to an errno.
func classify(what string, err error) error {
	if err == nil {
		return fmt.Errorf("vault: %s: no answer: %w", what, keystore.ErrUnavailable)
	}
	var re *api.ResponseError
	if errors.As(err, &re) {
		msg := strings.Join(re.Errors, "; ")
		switch {
		case re.StatusCode == http.StatusForbidden || re.StatusCode == http.StatusUnauthorized:
			return fmt.Errorf("vault: %s: permission denied (%s): %w", what, msg, keystore.ErrPermission)
		case re.StatusCode == http.StatusServiceUnavailable:
			return fmt.Errorf("vault: %s: unavailable (%s): %w", what, msg, keystore.ErrUnavailable)
		case re.StatusCode == http.StatusNotFound || strings.Contains(msg, "not found"):
			return fmt.Errorf("vault: %s: %s: %w", what, msg, keystore.ErrKeyNotFound)
		case re.StatusCode == http.StatusBadRequest:
			return fmt.Errorf("vault: %s: %s: %w", what, msg, keystore.ErrInvalidCiphertext)
		}
		return fmt.Errorf("vault: %s: HTTP %d (%s): %w", what, re.StatusCode, msg, keystore.ErrUnavailable)
	}
	return fmt.Errorf("vault: %s: %v: %w", what, err, keystore.ErrUnavailable)
}
