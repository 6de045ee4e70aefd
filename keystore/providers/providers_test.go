package providers

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/ezfs/ezfs/keystore"
)

// A version made like an AppRole version (kms rotate, a rotation detected in Vault)
// authenticates the same way, with the same secret ID source.
func TestSpecOfAppRole(t *testing.T) {
	mk := &keystore.MainKey{Name: "tenant", Version: 1, Provider: "vault", Credential: &keystore.Credential{File: "/run/sid"},
		Settings: map[string]string{"key": "k", "mount": "transit", "address": "http://127.0.0.1:8200",
			"auth": "approle", "role_id": "rid", "auth_mount": "approle-ezfs"}}
	s := SpecOf(mk, 2)
	if s.VaultAuth != "approle" || s.VaultRoleID != "rid" || s.VaultAuthMount != "approle-ezfs" || s.Credential != mk.Credential {
		t.Errorf("SpecOf: %+v", s)
	}
	if err := s.Check(); err != nil {
		t.Error(err)
	}
	for name, bad := range map[string]Spec{
		"no role ID":          {Provider: "vault", VaultKey: "k", VaultAuth: "approle", Credential: mk.Credential},
		"no secret ID source": {Provider: "vault", VaultKey: "k", VaultAuth: "approle", VaultRoleID: "rid"},
		"role ID with tokens": {Provider: "vault", VaultKey: "k", VaultRoleID: "rid"},
		"unknown auth":        {Provider: "vault", VaultKey: "k", VaultAuth: "ldap"},
		"a systemd path":      {Provider: "system", Credential: &keystore.Credential{Systemd: "../pass"}},
	} {
		if err := bad.Check(); !errors.Is(err, keystore.ErrBadInput) {
			t.Errorf("%s: %v, want ErrBadInput", name, err)
		}
	}
}

// A systemd credential is read from $CREDENTIALS_DIRECTORY at each call.
func TestSystemdCredentialSource(t *testing.T) {
	src := &keystore.Credential{Systemd: "pin"}
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	if _, err := (Secrets{}).Credential(src, []byte("fallback"), "the PIN"); !errors.Is(err, keystore.ErrPermission) {
		t.Errorf("without $CREDENTIALS_DIRECTORY: %v, want ErrPermission", err)
	}
	d := t.TempDir()
	if err := os.WriteFile(filepath.Join(d, "pin"), []byte("1234\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", d)
	if b, err := (Secrets{}).Credential(src, []byte("fallback"), "the PIN"); err != nil || string(b) != "1234" {
		t.Errorf("Credential: %q %v", b, err)
	}
}
