package keystore

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ezfs/ezfs/crypto"
)

// KindSystem is the provider whose private key is sealed in the keystore itself.
const KindSystem = "system"

// SystemKeyBits is the RSA size of a system main key.
const SystemKeyBits = 3072

// sealContext binds a sealed private key to its main key version; the default main
// key keeps the context of keystores from before named main keys.
func sealContext(ref MainRef) string {
	if ref.Name == DefaultMain || ref.Name == "" {
		return fmt.Sprintf("ezfs main key v%d", ref.Version)
	}
	return fmt.Sprintf("ezfs main key %q v%d", ref.Name, ref.Version)
}

// NewSystemMainKey generates an RSA key pair and seals its private part under
// passphrase, for version `version` of main key name ("" for the default).
func NewSystemMainKey(passphrase []byte, name string, version uint32) (*MainKey, error) {
	if name == "" {
		name = DefaultMain
	}
	priv, err := rsa.GenerateKey(rand.Reader, SystemKeyBits)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	defer crypto.Zero(der)
	kdf, err := crypto.DefaultKDF()
	if err != nil {
		return nil, err
	}
	sealed, err := crypto.SealSecret(der, passphrase, sealContext(MainRef{name, version}), kdf)
	if err != nil {
		return nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		return nil, err
	}
	fp, err := crypto.Fingerprint(&priv.PublicKey)
	if err != nil {
		return nil, err
	}
	return &MainKey{
		Name:        name,
		Version:     version,
		Provider:    KindSystem,
		KeyRef:      "sealed in keystore (argon2id)",
		Algorithm:   fmt.Sprintf("RSA-%d-OAEP", SystemKeyBits),
		OAEPHash:    "SHA-256",
		PublicKey:   pubDER,
		Fingerprint: fp,
		State:       StateActive,
		Created:     time.Now().UTC(),
		Sealed:      sealed,
	}, nil
}

// System is the provider for system main key versions, unsealed in memory.
type System struct {
	mu   sync.RWMutex
	keys map[MainRef]*rsa.PrivateKey // guarded by mu
}

// UnlockSystem unseals every system main key version among keys with passphrase.
// A wrong passphrase is ErrPermission.
func UnlockSystem(keys []*MainKey, passphrase []byte) (*System, error) {
	s := &System{keys: map[MainRef]*rsa.PrivateKey{}}
	for _, mk := range keys {
		if mk.Provider != KindSystem || mk.Sealed == nil {
			continue
		}
		der, err := mk.Sealed.Open(passphrase, sealContext(mk.Ref()))
		if errors.Is(err, crypto.ErrAuth) {
			return nil, fmt.Errorf("unseal main key %s: wrong passphrase: %w", mk.Ref(), ErrPermission)
		}
		if err != nil {
			return nil, fmt.Errorf("unseal main key %s: %w", mk.Ref(), err)
		}
		k, err := x509.ParsePKCS8PrivateKey(der)
		crypto.Zero(der)
		if err != nil {
			return nil, fmt.Errorf("main key %s: %w", mk.Ref(), err)
		}
		priv, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("main key %s: not RSA: %w", mk.Ref(), ErrInvalidCiphertext)
		}
		s.keys[mk.Ref()] = priv
	}
	return s, nil
}

// Kind implements Provider.
func (s *System) Kind() string { return KindSystem }

// Status implements Provider: a sealed local key is always reachable once unlocked.
func (s *System) Status(ctx context.Context) error { return nil }

// Decrypt implements Provider.
func (s *System) Decrypt(ctx context.Context, mk *MainKey, ciphertext []byte) ([]byte, error) {
	s.mu.RLock()
	priv := s.keys[mk.Ref()]
	s.mu.RUnlock()
	if priv == nil {
		return nil, fmt.Errorf("system main key %s is not unlocked: %w", mk.Ref(), ErrKeyNotFound)
	}
	h, err := HashByName(mk.OAEPHash)
	if err != nil {
		return nil, err
	}
	pt, err := rsa.DecryptOAEP(h.New(), nil, priv, ciphertext, nil)
	if err != nil {
		return nil, fmt.Errorf("main key %s: %w", mk.Ref(), ErrInvalidCiphertext)
	}
	return pt, nil
}

// Close forgets the private keys. Go cannot promise every copy is gone (big.Int
// internals), but the keys are dropped and their primes zeroed.
func (s *System) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for v, k := range s.keys {
		for _, p := range k.Primes {
			p.SetInt64(0)
		}
		k.D.SetInt64(0)
		delete(s.keys, v)
	}
	return nil
}
