package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/ezfs/ezfs/backing"
	"github.com/ezfs/ezfs/control"
	"github.com/ezfs/ezfs/crypto"
	"github.com/ezfs/ezfs/keystore"
	"github.com/ezfs/ezfs/keystore/providers"
	"github.com/ezfs/ezfs/zones"
	berrors "go.etcd.io/bbolt/errors"
)

// codeTable maps the typed errors of the packages below to control codes. It is the
// only place that does: handlers and the CLI return or wrap these errors, Classify
// reads the code off. The first entry whose error is in the chain wins, so the
// credential and provider errors come before what they may wrap.
var codeTable = []struct {
	err  error
	code control.Code
}{
	{keystore.ErrPermission, control.CodePermission},
	{providers.ErrNoCredential, control.CodePermission},
	{os.ErrPermission, control.CodePermission},
	{keystore.ErrUnavailable, control.CodeUnavailable},
	{control.ErrNoDaemon, control.CodeUnavailable},
	{keystore.ErrBadInput, control.CodeUsage},
	{zones.ErrNotDir, control.CodeUsage},
	{errUsage, control.CodeUsage},
	{keystore.ErrKeyNotFound, control.CodeNotFound},
	{keystore.ErrNoStore, control.CodeNotFound},
	{zones.ErrNoJob, control.CodeNotFound},
	{control.ErrNotInMount, control.CodeNotFound},
	{backing.ErrNotBeneath, control.CodeNotFound},
	{errNotFound, control.CodeNotFound},
	{os.ErrNotExist, control.CodeNotFound},
	{keystore.ErrExists, control.CodeBusy},
	{keystore.ErrLocked, control.CodeBusy},
	{keystore.ErrConflict, control.CodeBusy},
	{keystore.ErrInUse, control.CodeBusy},
	{keystore.ErrKeyState, control.CodeBusy},
	{zones.ErrJobRunning, control.CodeBusy},
	{keystore.ErrClaimed, control.CodeBusy},
	{keystore.ErrClaimLost, control.CodeBusy},
	{zones.ErrIsZone, control.CodeBusy},
	{zones.ErrInsideZone, control.CodeBusy},
	{zones.ErrAboveZone, control.CodeBusy},
	{zones.ErrNotEmpty, control.CodeBusy},
	{os.ErrExist, control.CodeBusy},
	{syscall.EBUSY, control.CodeBusy},
	{crypto.ErrAuth, control.CodeCorrupt},
	{crypto.ErrFormat, control.CodeCorrupt},
	{keystore.ErrInvalidCiphertext, control.CodeCorrupt},
	{zones.ErrDamaged, control.CodeCorrupt},
	{zones.ErrNoEDEK, control.CodeCorrupt},
	{berrors.ErrInvalid, control.CodeCorrupt},
	{berrors.ErrChecksum, control.CodeCorrupt},
	{berrors.ErrVersionMismatch, control.CodeCorrupt},
}

// Sentinels for the daemon's and the CLI's own errors that no package has a type for.
var (
	errUsage    = errors.New("usage error")
	errNotFound = errors.New("not found")
)

// Classify is the code of err: the one it carries (an answer of the daemon), else the
// first typed error of codeTable in its chain, else internal.
func Classify(err error) control.Code {
	if err == nil {
		return control.CodeOK
	}
	if c := control.CodeOf(err); c != "" {
		return c
	}
	for _, t := range codeTable {
		if errors.Is(err, t.err) {
			return t.code
		}
	}
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	if errors.As(err, &se) || errors.As(err, &te) {
		return control.CodeUsage
	}
	return control.CodeInternal
}

// reworded is an error with a message of its own that still classifies as the error it
// was made from.
type reworded struct {
	msg string
	err error
}

func (r *reworded) Error() string { return r.msg }
func (r *reworded) Unwrap() error { return r.err }

// Reword gives err the message format makes; errors.Is and Classify still see err.
func Reword(err error, format string, a ...any) error {
	return &reworded{msg: fmt.Sprintf(format, a...), err: err}
}

// UsageError is a usage error (exit code 2) with the message format makes.
func UsageError(format string, a ...any) error { return Reword(errUsage, format, a...) }

// NotFoundError is a not-found error (exit code 3) with the message format makes.
func NotFoundError(format string, a ...any) error { return Reword(errNotFound, format, a...) }
