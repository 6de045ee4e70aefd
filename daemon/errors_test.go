package daemon

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"

	"github.com/ezfs/ezfs/control"
	"github.com/ezfs/ezfs/crypto"
	"github.com/ezfs/ezfs/keystore"
	"github.com/ezfs/ezfs/zones"
)

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		err  error
		want control.Code
	}{
		{nil, control.CodeOK},
		{errors.New("something odd"), control.CodeInternal},
		{UsageError("bad %s", "flag"), control.CodeUsage},
		{fmt.Errorf("x: %w", keystore.ErrBadInput), control.CodeUsage},
		{Reword(keystore.ErrKeyNotFound, "key %q does not exist", "k"), control.CodeNotFound},
		{fmt.Errorf("open: %w", os.ErrNotExist), control.CodeNotFound},
		{fmt.Errorf("/x %w", control.ErrNotInMount), control.CodeNotFound},
		{fmt.Errorf("unseal: wrong passphrase: %w", keystore.ErrPermission), control.CodePermission},
		// A wrong passphrase is an authentication failure too: the credential wins.
		{fmt.Errorf("%w: %w", keystore.ErrPermission, crypto.ErrAuth), control.CodePermission},
		{fmt.Errorf("vault: %w", keystore.ErrUnavailable), control.CodeUnavailable},
		{fmt.Errorf("%w: main key: %w", ErrDefaultDown, keystore.ErrUnavailable), control.CodeUnavailable},
		{fmt.Errorf("zone /z: %w", zones.ErrJobRunning), control.CodeBusy},
		{fmt.Errorf("job of zone z: %w", keystore.ErrClaimLost), control.CodeBusy},
		{fmt.Errorf("/d %w", zones.ErrNotEmpty), control.CodeBusy},
		{Reword(syscall.EBUSY, "busy"), control.CodeBusy},
		{fmt.Errorf("block 3: %w", crypto.ErrAuth), control.CodeCorrupt},
		{fmt.Errorf("EDEK: %w", crypto.ErrFormat), control.CodeCorrupt},
		{&control.Error{Code: control.CodeBusy, Msg: "from the daemon"}, control.CodeBusy},
	} {
		if got := Classify(c.err); got != c.want {
			t.Errorf("Classify(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}

// TestReworded keeps the message and the sentinel.
func TestReworded(t *testing.T) {
	err := Reword(keystore.ErrExists, "key %q already exists", "k")
	if err.Error() != `key "k" already exists` || !errors.Is(err, keystore.ErrExists) {
		t.Errorf("%v", err)
	}
}
