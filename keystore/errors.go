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
	// ErrNotDue is a conditional roll whose condition no longer held when its
	// transaction read the key (another host rolled it first).
	ErrNotDue = errors.New("no longer due")
	// ErrKeyState refuses an operation the key's lifecycle state does not allow.
	ErrKeyState = errors.New("not allowed in the key's state")
	// ErrKeyDisabled is a data request refused because its zone key is not active:
	// EACCES in the mount (errors.Is sees ErrPermission in it).
	ErrKeyDisabled error = keyNotActive{}
	// ErrStoreUnavailable is a keystore that does not answer in time (an etcd cluster
	// without quorum); errors.Is sees ErrUnavailable in it (exit 5).
	ErrStoreUnavailable error = storeUnavailable{}
)

// errStoreRefused is a keystore that refused this host's credentials (etcd's user or
// certificate): ErrPermission (exit 4).
var errStoreRefused error = storeRefused{}

type storeRefused struct{}

func (storeRefused) Error() string        { return "keystore refused the credentials" }
func (storeRefused) Is(target error) bool { return target == ErrPermission }

type storeUnavailable struct{}

func (storeUnavailable) Error() string        { return "keystore unavailable" }
func (storeUnavailable) Is(target error) bool { return target == ErrUnavailable }

type keyNotActive struct{}

func (keyNotActive) Error() string        { return "zone key is not active" }
func (keyNotActive) Is(target error) bool { return target == ErrPermission }
