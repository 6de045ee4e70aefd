package fs

import (
	"errors"
	"path/filepath"
	"syscall"

	"github.com/ezfs/ezfs/crypto"
	"github.com/ezfs/ezfs/keystore"
	"github.com/ezfs/ezfs/zones"
)

// path names the node's backing file in messages. It is never opened: every backing
// call goes through package backing.
func (n *node) path() string { return filepath.Join(n.fsys.root.Path, n.rel()) }

// errno maps an error of the encrypted data path to an errno and logs why; the reason
// of an EIO must be findable in the daemon's log. fd is unused; it names the open file
// the error came from at the call sites.
func (n *node) errno(fd int, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if z := n.zone.Load(); z != nil && n.fsys.met != nil && errors.Is(err, crypto.ErrAuth) {
		n.fsys.met.AuthFailure(z.IDString())
	}
	var en syscall.Errno
	switch {
	case errors.As(err, &en):
		return en
	case errors.Is(err, keystore.ErrPermission):
		n.fsys.log.Printf("%s: %v", n.path(), err)
		return syscall.EACCES
	case errors.Is(err, keystore.ErrKeyNotFound):
		n.fsys.log.Printf("%s: %v", n.path(), err)
		return syscall.ENOKEY
	case errors.Is(err, zones.ErrDamaged):
		n.fsys.log.Printf("EIO on %s: %v", n.path(), err)
		return syscall.EIO
	}
	n.fsys.log.Printf("EIO on %s: %v", n.path(), err)
	return syscall.EIO
}
