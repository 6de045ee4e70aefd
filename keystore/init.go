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
	mk, err := NewSystemMainKey(passphrase, DefaultMain, 1)
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
	a.Action("init", map[string]any{"main_key": mk.Name, "provider": KindSystem, "main_version": mk.Version, "fingerprint": mk.Fingerprint}, nil)
	return mk, a.Close()
}
