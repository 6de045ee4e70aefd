// Package pkcs11 is the main key provider for an HSM reached through PKCS#11: the RSA
// private key of each main key version is generated in (or found on) a token, marked
// sensitive and not extractable, and only ever used there, to RSA-OAEP-decrypt wrapped
// zone key versions.
package pkcs11

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"

	"github.com/ezfs/ezfs/crypto"
	"github.com/ezfs/ezfs/keystore"
	p11 "github.com/miekg/pkcs11"
)

// Kind is the provider name in the keystore and on the command line.
const Kind = "pkcs11"

// KeyBits is the RSA size of keys generated in a token.
const KeyBits = 3072

// Config locates a token and a key on it.
type Config struct {
	Module string // path of the PKCS#11 module (.so)
	Token  string // token label
	Key    string // key label
	PIN    []byte
}

// Provider holds a logged-in PKCS#11 module. Safe for concurrent use.
type Provider struct {
	ctx      *p11.Ctx
	slot     uint
	cfg      Config
	sessions chan p11.SessionHandle // idle logged-in sessions

	mu   sync.Mutex
	keys map[string]p11.ObjectHandle // guarded by mu: private keys by label
}

const poolSize = 4

// Open loads the module, finds the token by label and logs in with the PIN.
func Open(cfg Config) (*Provider, error) {
	if cfg.Module == "" || cfg.Token == "" {
		return nil, fmt.Errorf("pkcs11: module and token are required: %w", keystore.ErrBadInput)
	}
	ctx, err := acquireModule(cfg.Module)
	if err != nil {
		return nil, err
	}
	// Keep a copy of the PIN: sessions opened later (after a token reset, or for more
	// parallel calls) log in again, and the caller zeroes its copy.
	cfg.PIN = bytes.Clone(cfg.PIN)
	p := &Provider{ctx: ctx, cfg: cfg, sessions: make(chan p11.SessionHandle, poolSize), keys: map[string]p11.ObjectHandle{}}
	slot, err := p.findToken()
	if err != nil {
		p.Close()
		return nil, err
	}
	p.slot = slot
	sh, err := p.openSession()
	if err != nil {
		p.Close()
		return nil, err
	}
	p.sessions <- sh
	return p, nil
}

func (p *Provider) findToken() (uint, error) {
	slots, err := p.ctx.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("pkcs11: list slots: %w", classify(err))
	}
	for _, s := range slots {
		ti, err := p.ctx.GetTokenInfo(s)
		if err == nil && strings.TrimRight(ti.Label, " \x00") == p.cfg.Token {
			return s, nil
		}
	}
	return 0, fmt.Errorf("pkcs11: no token labelled %q in %s: %w", p.cfg.Token, p.cfg.Module, keystore.ErrUnavailable)
}

// openSession opens a session and logs the user in; a login that another session
// already made is success.
func (p *Provider) openSession() (p11.SessionHandle, error) {
	sh, err := p.ctx.OpenSession(p.slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		return 0, fmt.Errorf("pkcs11: open session on %q: %w", p.cfg.Token, classify(err))
	}
	if err := p.ctx.Login(sh, p11.CKU_USER, string(p.cfg.PIN)); err != nil && !isCode(err, p11.CKR_USER_ALREADY_LOGGED_IN) {
		_ = p.ctx.CloseSession(sh)
		return 0, fmt.Errorf("pkcs11: log in to %q: %w", p.cfg.Token, classify(err))
	}
	return sh, nil
}

// session takes an idle session or opens one; put returns it, or drops it when the
// error says it is broken.
func (p *Provider) session() (p11.SessionHandle, error) {
	select {
	case sh := <-p.sessions:
		return sh, nil
	default:
		return p.openSession()
	}
}

func (p *Provider) put(sh p11.SessionHandle, err error) {
	if err != nil && errors.Is(classify(err), keystore.ErrUnavailable) {
		_ = p.ctx.CloseSession(sh)
		p.mu.Lock()
		p.keys = map[string]p11.ObjectHandle{} // handles may be stale after a reset
		p.mu.Unlock()
		return
	}
	select {
	case p.sessions <- sh:
	default:
		_ = p.ctx.CloseSession(sh)
	}
}

// Kind implements keystore.Provider.
func (p *Provider) Kind() string { return Kind }

// Status implements keystore.Provider: the token must still be there.
func (p *Provider) Status(ctx context.Context) error {
	if _, err := p.ctx.GetTokenInfo(p.slot); err != nil {
		return fmt.Errorf("pkcs11: token %q: %w", p.cfg.Token, classify(err))
	}
	return nil
}

func (p *Provider) findObject(sh p11.SessionHandle, class uint, label string) (p11.ObjectHandle, bool, error) {
	tmpl := []*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, class), p11.NewAttribute(p11.CKA_LABEL, label)}
	if err := p.ctx.FindObjectsInit(sh, tmpl); err != nil {
		return 0, false, classify(err)
	}
	objs, _, err := p.ctx.FindObjects(sh, 2)
	_ = p.ctx.FindObjectsFinal(sh)
	if err != nil {
		return 0, false, classify(err)
	}
	switch len(objs) {
	case 0:
		return 0, false, nil
	case 1:
		return objs[0], true, nil
	}
	return 0, false, fmt.Errorf("pkcs11: %d objects labelled %q on %q: %w", len(objs), label, p.cfg.Token, keystore.ErrBadInput)
}

func (p *Provider) privateKey(sh p11.SessionHandle, label string) (p11.ObjectHandle, error) {
	p.mu.Lock()
	h, ok := p.keys[label]
	p.mu.Unlock()
	if ok {
		return h, nil
	}
	h, found, err := p.findObject(sh, p11.CKO_PRIVATE_KEY, label)
	if err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("pkcs11: no private key labelled %q on %q: %w", label, p.cfg.Token, keystore.ErrKeyNotFound)
	}
	p.mu.Lock()
	p.keys[label] = h
	p.mu.Unlock()
	return h, nil
}

func oaepMechanism(hash string) (*p11.Mechanism, error) {
	var params *p11.OAEPParams
	switch hash {
	case "SHA-256":
		params = p11.NewOAEPParams(p11.CKM_SHA256, p11.CKG_MGF1_SHA256, p11.CKZ_DATA_SPECIFIED, nil)
	case "SHA-1":
		params = p11.NewOAEPParams(p11.CKM_SHA_1, p11.CKG_MGF1_SHA1, p11.CKZ_DATA_SPECIFIED, nil)
	default:
		return nil, fmt.Errorf("pkcs11: OAEP hash %q: %w", hash, keystore.ErrBadInput)
	}
	return p11.NewMechanism(p11.CKM_RSA_PKCS_OAEP, params), nil
}

// Decrypt implements keystore.Provider: RSA-OAEP inside the token.
func (p *Provider) Decrypt(ctx context.Context, mk *keystore.MainKey, ciphertext []byte) ([]byte, error) {
	return p.decrypt(mk.Settings["key"], mk.OAEPHash, ciphertext)
}

func (p *Provider) decrypt(label, hash string, ciphertext []byte) (out []byte, err error) {
	mech, err := oaepMechanism(hash)
	if err != nil {
		return nil, err
	}
	sh, err := p.session()
	if err != nil {
		return nil, err
	}
	defer func() { p.put(sh, err) }()
	key, err := p.privateKey(sh, label)
	if err != nil {
		return nil, err
	}
	if err := p.ctx.DecryptInit(sh, []*p11.Mechanism{mech}, key); err != nil {
		return nil, fmt.Errorf("pkcs11: decrypt with %q: %w", label, classify(err))
	}
	out, err = p.ctx.Decrypt(sh, ciphertext)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: decrypt with %q: %w", label, classify(err))
	}
	return out, nil
}

// Serves reports whether the provider is logged in to token on module.
func (p *Provider) Serves(module, token string) bool {
	return p.cfg.Module == module && p.cfg.Token == token
}

// Enroll makes main key version `version` from the key labelled label: it uses the key
// pair already on the token (bring your own key) or generates one there, reads its
// public part, and picks the OAEP hash the token can decrypt with (SHA-256, else
// SHA-1, the only one SoftHSM 2.6 accepts).
// base is the label later versions are named after (label itself for the first).
func (p *Provider) Enroll(ctx context.Context, label, base string, version uint32) (*keystore.MainKey, error) {
	if base == "" {
		base = label
	}
	sh, err := p.session()
	if err != nil {
		return nil, err
	}
	pub, err := p.publicKey(sh, label)
	if errors.Is(err, keystore.ErrKeyNotFound) {
		pub, err = p.generate(sh, label)
	}
	p.put(sh, err)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	fp, err := crypto.Fingerprint(pub)
	if err != nil {
		return nil, err
	}
	mk := &keystore.MainKey{
		Version: version, Provider: Kind,
		Settings:  map[string]string{"module": p.cfg.Module, "token": p.cfg.Token, "key": label, "key_base": base},
		KeyRef:    fmt.Sprintf("token %q, key %q", p.cfg.Token, label),
		Algorithm: fmt.Sprintf("RSA-%d-OAEP", pub.N.BitLen()),
		PublicKey: der, Fingerprint: fp, State: keystore.StateActive, Created: time.Now().UTC(),
	}
	var lastErr error
	for _, h := range []string{"SHA-256", "SHA-1"} {
		mk.OAEPHash = h
		if lastErr = keystore.SelfTest(ctx, p, mk); lastErr == nil {
			return mk, nil
		}
	}
	return nil, fmt.Errorf("pkcs11: the token cannot RSA-OAEP-decrypt with %q: %w", label, lastErr)
}

func (p *Provider) publicKey(sh p11.SessionHandle, label string) (*rsa.PublicKey, error) {
	// The public object if there is one, else the private key's public attributes,
	// which stay readable on a sensitive key.
	h, found, err := p.findObject(sh, p11.CKO_PUBLIC_KEY, label)
	if err == nil && !found {
		h, found, err = p.findObject(sh, p11.CKO_PRIVATE_KEY, label)
	}
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("pkcs11: no key labelled %q on %q: %w", label, p.cfg.Token, keystore.ErrKeyNotFound)
	}
	attrs, err := p.ctx.GetAttributeValue(sh, h, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_MODULUS, nil), p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, nil),
	})
	if err != nil {
		return nil, fmt.Errorf("pkcs11: read public key %q: %w", label, classify(err))
	}
	n := new(big.Int).SetBytes(attrs[0].Value)
	e := new(big.Int).SetBytes(attrs[1].Value)
	if n.BitLen() < 2048 || !e.IsInt64() {
		return nil, fmt.Errorf("pkcs11: key %q is not a usable RSA key (%d bits): %w", label, n.BitLen(), keystore.ErrBadInput)
	}
	return &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
}

func (p *Provider) generate(sh p11.SessionHandle, label string) (*rsa.PublicKey, error) {
	pubT := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_RSA),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_ENCRYPT, true),
		p11.NewAttribute(p11.CKA_MODULUS_BITS, KeyBits),
		p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
		p11.NewAttribute(p11.CKA_LABEL, label),
	}
	privT := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_RSA),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_DECRYPT, true),
		p11.NewAttribute(p11.CKA_SIGN, false),
		p11.NewAttribute(p11.CKA_LABEL, label),
	}
	mech := []*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_PKCS_KEY_PAIR_GEN, nil)}
	if _, _, err := p.ctx.GenerateKeyPair(sh, mech, pubT, privT); err != nil {
		return nil, fmt.Errorf("pkcs11: generate key %q on %q: %w", label, p.cfg.Token, classify(err))
	}
	return p.publicKey(sh, label)
}

// Close closes the provider's sessions, and finalizes and unloads the module when no
// other provider in the process uses it (a PKCS#11 module is initialised once per
// process: finalizing it under another token's provider breaks that one).
func (p *Provider) Close() error {
	if p.ctx == nil {
		return nil
	}
	close(p.sessions)
	for sh := range p.sessions {
		_ = p.ctx.CloseSession(sh)
	}
	releaseModule(p.cfg.Module)
	p.ctx = nil
	crypto.Zero(p.cfg.PIN)
	return nil
}

// modules are the loaded PKCS#11 modules, shared by every provider of this process.
var modules = struct {
	mu sync.Mutex
	m  map[string]*module // guarded by mu; by path
}{m: map[string]*module{}}

type module struct {
	ctx  *p11.Ctx
	refs int
}

// acquireModule loads and initialises the module at path, or takes another reference
// to it if it is loaded.
func acquireModule(path string) (*p11.Ctx, error) {
	modules.mu.Lock()
	defer modules.mu.Unlock()
	if m := modules.m[path]; m != nil {
		m.refs++
		return m.ctx, nil
	}
	ctx := p11.New(path)
	if ctx == nil {
		return nil, fmt.Errorf("pkcs11: cannot load module %s: %w", path, keystore.ErrUnavailable)
	}
	if err := ctx.Initialize(); err != nil && !isCode(err, p11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		ctx.Destroy()
		return nil, fmt.Errorf("pkcs11: initialise %s: %w", path, classify(err))
	}
	modules.m[path] = &module{ctx: ctx, refs: 1}
	return ctx, nil
}

// releaseModule drops a reference; the last one finalizes and unloads the module.
func releaseModule(path string) {
	modules.mu.Lock()
	defer modules.mu.Unlock()
	m := modules.m[path]
	if m == nil {
		return
	}
	if m.refs--; m.refs > 0 {
		return
	}
	delete(modules.m, path)
	_ = m.ctx.Finalize()
	m.ctx.Destroy()
}

// ModuleRefs is how many providers of this process use the module at path (tests).
func ModuleRefs(path string) int {
	modules.mu.Lock()
	defer modules.mu.Unlock()
	if m := modules.m[path]; m != nil {
		return m.refs
	}
	return 0
}

func isCode(err error, code uint) bool {
	var e p11.Error
	return errors.As(err, &e) && uint(e) == code
}

// classify wraps a PKCS#11 error in the class the daemon maps to an errno.
func classify(err error) error {
	var e p11.Error
	if !errors.As(err, &e) {
		return fmt.Errorf("%v: %w", err, keystore.ErrUnavailable)
	}
	switch uint(e) {
	case p11.CKR_PIN_INCORRECT, p11.CKR_PIN_INVALID, p11.CKR_PIN_LEN_RANGE, p11.CKR_PIN_EXPIRED,
		p11.CKR_PIN_LOCKED, p11.CKR_USER_NOT_LOGGED_IN, p11.CKR_USER_PIN_NOT_INITIALIZED:
		return fmt.Errorf("%v (wrong PIN?): %w", err, keystore.ErrPermission)
	case p11.CKR_KEY_HANDLE_INVALID, p11.CKR_OBJECT_HANDLE_INVALID:
		return fmt.Errorf("%v: %w", err, keystore.ErrKeyNotFound)
	case p11.CKR_ENCRYPTED_DATA_INVALID, p11.CKR_ENCRYPTED_DATA_LEN_RANGE, p11.CKR_DATA_INVALID,
		p11.CKR_DATA_LEN_RANGE, p11.CKR_MECHANISM_INVALID, p11.CKR_MECHANISM_PARAM_INVALID,
		p11.CKR_KEY_TYPE_INCONSISTENT, p11.CKR_KEY_FUNCTION_NOT_PERMITTED:
		return fmt.Errorf("%v: %w", err, keystore.ErrInvalidCiphertext)
	}
	return fmt.Errorf("%v: %w", err, keystore.ErrUnavailable)
}
