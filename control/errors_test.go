package control

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"testing"
)

var errTest = errors.New("no such thing")

// TestCallCarriesCode: an error answered on the socket arrives as an *Error with the
// code the server's classifier gave, and its one-line message.
func TestCallCarriesCode(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	srv := Serve(ln, func(_ context.Context, op string, _ json.RawMessage) (any, error) {
		if op == "ok" {
			return "fine", nil
		}
		return nil, errTest
	}, func(err error) Code {
		if errors.Is(err, errTest) {
			return CodeNotFound
		}
		return CodeInternal
	})
	defer srv.Close()
	var s string
	if err := Call(sock, "ok", nil, &s); err != nil || s != "fine" {
		t.Fatalf("ok: %q %v", s, err)
	}
	err = Call(sock, "bad", nil, nil)
	if CodeOf(err) != CodeNotFound || err.Error() != "no such thing" {
		t.Errorf("bad: %v (code %q)", err, CodeOf(err))
	}
	err = Call(filepath.Join(t.TempDir(), "none.sock"), "ok", nil, nil)
	if CodeOf(err) != CodeUnavailable || !errors.Is(err, ErrNoDaemon) {
		t.Errorf("no daemon: %v (code %q)", err, CodeOf(err))
	}
	for c, n := range map[Code]int{CodeOK: 0, CodeInternal: 1, CodeUsage: 2, CodeNotFound: 3, CodePermission: 4,
		CodeUnavailable: 5, CodeBusy: 6, CodeCorrupt: 7, Code("newer"): 1} {
		if c.ExitCode() != n {
			t.Errorf("%s exits %d, want %d", c, c.ExitCode(), n)
		}
	}
}
