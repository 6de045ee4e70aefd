package keystore

import (
	"context"
	"fmt"
)

// InitSystem creates a keystore in dir whose main key version 1 is a local RSA key
// sealed under passphrase, after checking that the pair works (self-test).
func InitSystem(dir string, passphrase []byte) (*MainKey, error) {
	if len(passphrase) == 0 {
		return nil, fmt.Errorf("empty passphrase: %w", ErrBadInput)
	}
	s, err := Create(dir)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	mk, err := NewSystemMainKey(passphrase, 1)
	if err != nil {
		return nil, err
	}
	p, err := UnlockSystem([]*MainKey{mk}, passphrase)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	if err := SelfTest(context.Background(), p, mk); err != nil {
		return nil, err
	}
	if err := s.AddMainKey(mk); err != nil {
		return nil, err
	}
	a, err := OpenAudit(dir)
	if err != nil {
		return nil, err
	}
	a.Action("init", map[string]any{"provider": KindSystem, "main_version": mk.Version, "fingerprint": mk.Fingerprint}, nil)
	return mk, a.Close()
}

// Unlock opens the providers that the main key versions of s need.
func Unlock(s *Store, passphrase []byte) ([]Provider, error) {
	mks, err := s.MainKeys()
	if err != nil {
		return nil, err
	}
	needSystem := false
	for _, mk := range mks {
		if mk.Provider == KindSystem && mk.State == StateActive {
			needSystem = true
		}
	}
	var out []Provider
	if needSystem {
		if len(passphrase) == 0 {
			return nil, fmt.Errorf("the system main key needs a passphrase: %w", ErrPermission)
		}
		p, err := UnlockSystem(mks, passphrase)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}
