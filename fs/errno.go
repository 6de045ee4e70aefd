package fs

import (
	"errors"
	"log/slog"
	"path/filepath"
	"syscall"

	"github.com/ezfs/ezfs/crypto"
	"github.com/ezfs/ezfs/keystore"
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
		en = syscall.EACCES
	case errors.Is(err, keystore.ErrKeyNotFound):
		en = syscall.ENOKEY
	default:
		en = syscall.EIO
	}
	n.report(en, err)
	return en
}

// report logs why a request failed with errno e: a line "EIO on PATH: why" (or
// "PATH: why" for EACCES and ENOKEY), or with Events a record with the fields
// docs/DESIGN.md names.
func (n *node) report(e syscall.Errno, err error) {
	if n.fsys.events == nil {
		if e == syscall.EIO {
			n.fsys.log.Printf("EIO on %s: %v", n.path(), err)
		} else {
			n.fsys.log.Printf("%s: %v", n.path(), err)
		}
		return
	}
	attrs := []any{slog.String("errno", errnoName(e)), slog.String("path", n.path())}
	if z := n.zone.Load(); z != nil {
		attrs = append(attrs, slog.String("zone", z.IDString()), slog.String("key", z.Key))
		if v := n.loadedVersion(); v != 0 {
			attrs = append(attrs, slog.Uint64("key_version", uint64(v)))
		}
	}
	n.fsys.events.Error(err.Error(), attrs...)
}

// loadedVersion is the key version of the file's EDEK once it was opened; 0 before.
// It may be called with the content lock held or not: a try-lock never waits for it.
func (n *node) loadedVersion() uint32 {
	s := n.open.Load()
	if s == nil || !s.mu.TryRLock() {
		return 0
	}
	defer s.mu.RUnlock()
	return s.keyVersion
}

// errnoName is the symbolic name of the errnos the data path answers.
func errnoName(e syscall.Errno) string {
	switch e {
	case syscall.EIO:
		return "EIO"
	case syscall.EACCES:
		return "EACCES"
	case syscall.ENOKEY:
		return "ENOKEY"
	}
	return e.Error()
}
