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

// Config is one Transit key on one Vault server, as a main key version records it.
// Nothing comes from the environment (VAULT_ADDR and the like): two main keys on two
// servers work side by side. The command line fills an empty Address from VAULT_ADDR
// when a version is made, and the daemon passes the mount's VAULT_TOKEN for versions
// that record no credential source.
type Config struct {
	Key   string
	Mount string // the Transit engine's mount path, "transit" by default

	Address, Token, Namespace, CACert string
}

// Provider talks to one Vault server. Safe for concurrent use.
type Provider struct {
	c   *api.Client
	cfg Config
}

// Open builds a client for cfg's server; it does not contact the server.
func Open(cfg Config) (*Provider, error) {
	if cfg.Mount == "" {
		cfg.Mount = "transit"
	}
	if cfg.Address == "" {
		return nil, fmt.Errorf("vault: no server address (--vault-addr or VAULT_ADDR): %w", keystore.ErrBadInput)
	}
	if cfg.Token == "" {
		return nil, fmt.Errorf("vault: no token for %s: %w", cfg.Address, keystore.ErrPermission)
	}
	vc, err := serverConfig(cfg)
	if err != nil {
		return nil, err
	}
	c, err := api.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vault: %v: %w", err, keystore.ErrBadInput)
	}
	// NewClient takes VAULT_TOKEN and VAULT_NAMESPACE from the environment: override.
	c.SetToken(cfg.Token)
	if cfg.Namespace != "" {
		c.SetNamespace(cfg.Namespace)
	} else {
		c.ClearNamespace()
	}
	return &Provider{c: c, cfg: cfg}, nil
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
	if _, err := p.c.Auth().Token().LookupSelfWithContext(ctx); err != nil {
		return classify("token of "+p.c.Address(), err)
	}
	return nil
}

// Decrypt implements keystore.Provider with transit/decrypt, as vault:vN: ciphertext.
func (p *Provider) Decrypt(ctx context.Context, mk *keystore.MainKey, ciphertext []byte) ([]byte, error) {
	key, mount := mk.Settings["key"], mk.Settings["mount"]
	v := mk.Settings["transit_version"]
	sec, err := p.c.Logical().WriteWithContext(ctx, mount+"/decrypt/"+key, map[string]any{
		"ciphertext": "vault:v" + v + ":" + base64.StdEncoding.EncodeToString(ciphertext),
	})
	if err != nil {
		return nil, classify("decrypt with "+mount+"/keys/"+key, err)
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
	return &keystore.MainKey{
		Version: version, Provider: Kind,
		Settings: map[string]string{"key": p.cfg.Key, "mount": p.cfg.Mount, "transit_version": strconv.Itoa(latest),
			"address": p.c.Address(), "namespace": p.cfg.Namespace, "ca_cert": p.cfg.CACert, "auth": "token"},
		KeyRef:    fmt.Sprintf("%s %s v%d", p.c.Address(), path, latest),
		Algorithm: fmt.Sprintf("RSA-%d-OAEP", pub.N.BitLen()),
		// Transit decrypts RSA only with OAEP-SHA256 and an empty label.
		OAEPHash:  "SHA-256",
		PublicKey: blk.Bytes, Fingerprint: fp, State: keystore.StateActive, Created: time.Now().UTC(),
	}, nil
}

// HasNewer implements keystore.Rotating: the Transit key has a version newer than the
// one mk records.
func (p *Provider) HasNewer(ctx context.Context, mk *keystore.MainKey) (bool, error) {
	path := mk.Settings["mount"] + "/keys/" + mk.Settings["key"]
	sec, err := p.c.Logical().ReadWithContext(ctx, path)
	if err != nil || sec == nil {
		return false, classify("read "+path, err)
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
