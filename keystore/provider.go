package keystore

import (
	"bytes"
	"context"
	gocrypto "crypto"
	"fmt"

	"github.com/ezfs/ezfs/crypto"
)

// Provider holds the private parts of main key versions. The daemon never knows which
// provider it talks to; errors are wrapped in the classes of errors.go.
type Provider interface {
	// Kind is "system", "pkcs11" or "vault".
	Kind() string
	// Status is a cheap health check.
	Status(ctx context.Context) error
	// Decrypt RSA-OAEP-decrypts ciphertext with main key version mk, using the OAEP
	// hash recorded for mk and an empty label.
	Decrypt(ctx context.Context, mk *MainKey, ciphertext []byte) ([]byte, error)
	// Close releases sessions and zeroes what the provider holds in memory.
	Close() error
}

// Rotating is a provider that makes new versions of a key itself (a Vault Transit
// key rotated in Vault): HasNewer says whether one newer than mk exists there.
type Rotating interface {
	HasNewer(ctx context.Context, mk *MainKey) (bool, error)
}

// HashByName maps a recorded OAEP hash name to the hash.
func HashByName(name string) (gocrypto.Hash, error) {
	switch name {
	case "SHA-256":
		return gocrypto.SHA256, nil
	case "SHA-1":
		return gocrypto.SHA1, nil
	}
	return 0, fmt.Errorf("OAEP hash %q: %w", name, ErrBadInput)
}

// SelfTest wraps random bytes with mk's stored public key and unwraps them through p;
// it is run at enrolment so that a mismatched key pair is refused at once.
func SelfTest(ctx context.Context, p Provider, mk *MainKey) error {
	pub, err := mk.Public()
	if err != nil {
		return err
	}
	probe, err := crypto.NewZoneKey()
	if err != nil {
		return err
	}
	wrapped, err := crypto.WrapZoneKey(pub, mustHash(mk.OAEPHash), "self-test", mk.Version, probe)
	if err != nil {
		return err
	}
	pt, err := p.Decrypt(ctx, mk, wrapped)
	if err != nil {
		return fmt.Errorf("self-test of main key %s: %w", mk.Ref(), err)
	}
	defer crypto.Zero(pt)
	got, err := crypto.UnwrappedZoneKey(pt, "self-test", mk.Version)
	if err != nil || !bytes.Equal(got, probe) {
		return fmt.Errorf("self-test of main key %s: provider returned other bytes: %w", mk.Ref(), ErrInvalidCiphertext)
	}
	return nil
}

func mustHash(name string) gocrypto.Hash {
	h, err := HashByName(name)
	if err != nil {
		return gocrypto.SHA256
	}
	return h
}
