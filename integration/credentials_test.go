package integration

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestSystemdCredential: a main key whose secret is a systemd credential
// (--credential-systemd NAME): the keystore records the name, the daemon reads the file
// of that name in whatever $CREDENTIALS_DIRECTORY it is started with (another one on
// the second mount here); started without it, that zone answers EACCES with the reason
// logged and the default's zone works.
func TestSystemdCredential(t *testing.T) {
	const secret = "tenant passphrase from systemd"
	credDir := func() string {
		d := t.TempDir()
		writeFile(t, filepath.Join(d, "tenant-pass"), secret+"\n")
		return d
	}
	t.Setenv("CREDENTIALS_DIRECTORY", credDir())
	e := newEnv(t)
	e.fails("a name, not a path", "kms", "create", "bad", "--mount", e.mnt, "--provider", "system", "--credential-systemd", "../x")
	e.run("kms", "create", "tenant", "--mount", e.mnt, "--provider", "system", "--credential-systemd", "tenant-pass")
	e.run("key", "create", "kt", "--main-key", "tenant", "--mount", e.mnt)
	zt, zd := e.zone("zt", "kt"), e.zone("zd", "kd")
	writeFile(t, filepath.Join(zt, "f"), "tenant data")
	writeFile(t, filepath.Join(zd, "f"), "default data")
	if out := e.run("kms", "show", "tenant", "--mount", e.mnt); !strings.Contains(out, "tenant") {
		t.Errorf("kms show:\n%s", out)
	}
	if got := credentialOf(t, e, "tenant"); got != "systemd credential tenant-pass" {
		t.Errorf("kms show: credential %q", got)
	}
	e.umount()
	if raw := readFile(t, filepath.Join(e.ksDir(), "keystore.db")); strings.Contains(raw, secret) || !strings.Contains(raw, "tenant-pass") {
		t.Errorf("the keystore holds the secret, or not the credential's name")
	}
	t.Setenv("CREDENTIALS_DIRECTORY", credDir()) // another directory: the name is resolved at each start
	e.mount()
	readBack(t, e, tenant{main: "tenant", zone: "zt"}, "f", "tenant data")
	e.umount()
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	e.mount()
	if _, err := os.ReadFile(filepath.Join(zt, "f")); errnoOf(err) != syscall.EACCES {
		t.Errorf("the tenant's zone without $CREDENTIALS_DIRECTORY: %v, want EACCES", err)
	}
	readBack(t, e, tenant{main: "default", zone: "zd"}, "f", "default data")
	if log := e.daemonLog(); !strings.Contains(log, "$CREDENTIALS_DIRECTORY is not set") {
		t.Errorf("the log does not say why:\n%s", log)
	}
}

func credentialOf(t *testing.T, e *env, name string) string {
	t.Helper()
	var mks []struct{ Credential string }
	decodeJSON(t, e.run("kms", "show", name, "--json", "--mount", e.mnt), &mks)
	if len(mks) == 0 {
		t.Fatalf("kms show %s: nothing", name)
	}
	return mks[0].Credential
}
