package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"runtime/debug"

	"golang.org/x/crypto/argon2"
)

// KDFParams are the Argon2id parameters of a sealed secret; they are stored with it so
// that stronger defaults later do not break existing keystores.
type KDFParams struct {
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
	Salt      []byte `json:"salt"`
}

// DefaultKDF is the Argon2id cost for new sealed secrets: RFC 9106's second
// recommended option (3 passes, 64 MiB), about a quarter second on a small machine.
func DefaultKDF() (KDFParams, error) {
	p := KDFParams{Time: 3, MemoryKiB: 64 * 1024, Threads: 2, Salt: make([]byte, 16)}
	_, err := rand.Read(p.Salt)
	return p, err
}

// Sealed is a secret encrypted under a key derived from a passphrase.
type Sealed struct {
	KDF        KDFParams `json:"kdf"`
	Nonce      []byte    `json:"nonce"`
	Ciphertext []byte    `json:"ciphertext"`
}

// SealSecret encrypts secret under passphrase; context is bound as associated data.
func SealSecret(secret, passphrase []byte, context string, kdf KDFParams) (*Sealed, error) {
	aead, err := passphraseAEAD(passphrase, kdf)
	if err != nil {
		return nil, err
	}
	s := &Sealed{KDF: kdf, Nonce: make([]byte, aead.NonceSize())}
	if _, err := rand.Read(s.Nonce); err != nil {
		return nil, err
	}
	s.Ciphertext = aead.Seal(nil, s.Nonce, secret, []byte(context))
	return s, nil
}

// Open decrypts the secret. A wrong passphrase or edited record is ErrAuth.
func (s *Sealed) Open(passphrase []byte, context string) ([]byte, error) {
	aead, err := passphraseAEAD(passphrase, s.KDF)
	if err != nil {
		return nil, err
	}
	if len(s.Nonce) != aead.NonceSize() {
		return nil, fmt.Errorf("sealed secret: %w", ErrFormat)
	}
	out, err := aead.Open(nil, s.Nonce, s.Ciphertext, []byte(context))
	if err != nil {
		return nil, ErrAuth
	}
	return out, nil
}

func passphraseAEAD(passphrase []byte, p KDFParams) (cipher.AEAD, error) {
	if p.Time == 0 || p.MemoryKiB < 8 || p.Threads == 0 || len(p.Salt) < 16 {
		return nil, fmt.Errorf("argon2id parameters: %w", ErrFormat)
	}
	key := argon2.IDKey(passphrase, p.Salt, p.Time, p.MemoryKiB, p.Threads, 32)
	defer Zero(key)
	// Argon2id's working memory (MemoryKiB, 64 MiB by default) is garbage once the key
	// is derived, but the runtime keeps it mapped: the heap goal it raised lets the
	// scavenger hold it for the life of a daemon that unlocked once and then idles.
	// Give it back now; a forced collection of the small heap costs a millisecond
	// beside the quarter second the KDF took.
	debug.FreeOSMemory()
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}
