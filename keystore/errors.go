package keystore

import "errors"

// Error classes a provider or the keyring reports; callers branch on them with
// errors.Is to pick an errno or a CLI message.
var (
	ErrUnavailable       = errors.New("key provider unavailable")
	ErrPermission        = errors.New("key provider refused the credentials")
	ErrKeyNotFound       = errors.New("key not found")
	ErrInvalidCiphertext = errors.New("invalid ciphertext")

	ErrExists   = errors.New("already exists")
	ErrLocked   = errors.New("keystore is in use by another process")
	ErrNoStore  = errors.New("no keystore")
	ErrBadInput = errors.New("invalid input")
	ErrConflict = errors.New("changed meanwhile")
	ErrInUse    = errors.New("still in use")
)
