package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ezfs/ezfs/control"
)

// appRole sets v up for a tenant that authenticates with AppRole: Transit key key
// (made with the root token), a policy that allows only decrypt with it and reading
// it, and a role "ezfs" with that policy whose tokens live ttl (max twice that). It
// returns the role ID and a new secret ID.
func (v *vaultServer) appRole(key, ttl, maxTTL string) (roleID, secretID string) {
	v.t.Helper()
	v.cli("write", "transit/keys/"+key, "type=rsa-3072")
	policy := filepath.Join(v.t.TempDir(), "tenant.hcl")
	writeFile(v.t, policy, fmt.Sprintf(`path "transit/decrypt/%s" { capabilities = ["update"] }
path "transit/keys/%s" { capabilities = ["read"] }
`, key, key))
	v.cli("policy", "write", "tenant-decrypt", policy)
	v.cli("auth", "enable", "approle")
	v.cli("write", "auth/approle/role/ezfs", "token_policies=tenant-decrypt", "token_ttl="+ttl, "token_max_ttl="+maxTTL)
	return strings.TrimSpace(v.cli("read", "-field=role_id", "auth/approle/role/ezfs/role-id")), v.secretID()
}

func (v *vaultServer) secretID() string {
	v.t.Helper()
	return strings.TrimSpace(v.cli("write", "-f", "-field=secret_id", "auth/approle/role/ezfs/secret-id"))
}

// TestApproleMainKey: a main key on Vault whose daemon authenticates with AppRole
// (role ID recorded, secret ID in a file), not a token. Its zone reads and writes
// across a remount with no VAULT_TOKEN anywhere (another's secret ID is in a variable
// of ezfs mount); its tokens live 2 s (at most 4 s) and
// unwraps keep working well past that (the daemon logs in again). The secret ID is not
// in the keystore. A wrong secret ID is a one-line "permission denied" for that zone
// only (EACCES), in the log and in status; with a good one in the file, kms check
// finds it at once and the zone serves again without a remount.
func TestApproleMainKey(t *testing.T) {
	v := startVault(t)
	roleID, secret := v.appRole("tenant-ar", "2s", "4s")
	sidFile := writeSecret(t, "secret-id", secret)
	e := newEnv(t)
	e.fails("not --vault-token-file", "kms", "create", "bad", "--mount", e.mnt, "--provider", "vault", "--vault-addr", v.addr,
		"--vault-key", "tenant-ar", "--vault-auth", "approle", "--vault-role-id", roleID, "--vault-token-file", sidFile)
	e.fails("--vault-secret-id-file or --credential-env", "kms", "create", "bad", "--mount", e.mnt, "--provider", "vault",
		"--vault-addr", v.addr, "--vault-key", "tenant-ar", "--vault-auth", "approle", "--vault-role-id", roleID)
	t.Setenv("VAULT_TOKEN", "") // not the root token: AppRole only
	e.run("kms", "create", "tenant", "--mount", e.mnt, "--provider", "vault", "--vault-addr", v.addr, "--vault-key", "tenant-ar",
		"--vault-auth", "approle", "--vault-role-id", roleID, "--vault-secret-id-file", sidFile)
	e.run("key", "create", "kt", "--main-key", "tenant", "--mount", e.mnt)
	tn, def := tenant{main: "tenant", key: "kt", zone: "zt"}, tenant{main: "default", key: "kd", zone: "zd"}
	e.zone(tn.zone, tn.key)
	e.zone(def.zone, def.key)
	const n = 5
	for _, z := range []tenant{tn, def} {
		for i := 0; i < n; i++ {
			writeFile(t, filepath.Join(e.mnt, z.zone, fmt.Sprint("f", i)), fmt.Sprint(z.main, " ", i))
		}
	}
	// A second tenant on the same role takes its secret ID from a variable of
	// `ezfs mount` instead (its name recorded).
	t.Setenv("TENANT2_SECRET_ID", v.secretID())
	e.run("kms", "create", "tenant2", "--mount", e.mnt, "--provider", "vault", "--vault-addr", v.addr, "--vault-key", "tenant-ar",
		"--vault-auth", "approle", "--vault-role-id", roleID, "--credential-env", "TENANT2_SECRET_ID")
	e.run("key", "create", "kt2", "--main-key", "tenant2", "--mount", e.mnt)
	tn2 := tenant{main: "tenant2", key: "kt2", zone: "zt2"}
	e.zone(tn2.zone, tn2.key)
	writeFile(t, filepath.Join(e.mnt, tn2.zone, "f"), "tenant2's")
	var mks []control.MainKeyInfo
	decodeJSON(t, e.run("kms", "show", "tenant", "--json", "--mount", e.mnt), &mks)
	if len(mks) != 1 || mks[0].Settings["auth"] != "approle" || mks[0].Settings["role_id"] != roleID ||
		mks[0].Credential != "file "+sidFile {
		t.Errorf("kms show tenant: %+v", mks)
	}
	if raw := readFile(t, filepath.Join(e.ksDir(), "keystore.db")); strings.Contains(raw, secret) {
		t.Errorf("the keystore holds the secret ID")
	}
	t.Setenv("VAULT_ADDR", "http://127.0.0.1:1") // the recorded address serves, not the environment's
	e.umount()
	e.run("mount", e.backing, e.mnt, "--key-ttl", "1s")
	readBack(t, e, tn2, "f", "tenant2's")
	writeFile(t, filepath.Join(e.mnt, tn.zone, "after"), "written after the remount")
	readBack(t, e, tn, "after", "written after the remount")
	// A file not opened since the mount needs the zone key, unwrapped again once the
	// 1 s cache entry expires: one every 2 s, the last well past the tokens' 4 s max TTL.
	start := time.Now()
	for i := 0; i < n; i++ {
		if i > 0 {
			time.Sleep(2 * time.Second)
		}
		readBack(t, e, tn, fmt.Sprint("f", i), fmt.Sprint(tn.main, " ", i))
	}
	t.Logf("read fresh files for %v under AppRole tokens of 2 s (max 4 s)", time.Since(start).Round(time.Second))
	checkHealth(t, e, "tenant", "")
	for _, l := range strings.Split(e.daemonLog(), "\n") {
		if strings.Contains(l, "tenant v1") && (strings.Contains(l, "unwrap kt@") || strings.Contains(l, "does not answer")) {
			t.Errorf("the daemon logged trouble with the tenant's main key: %s", l)
		}
	}

	// A wrong secret ID: that zone only answers EACCES; the log and status say why, on
	// one line.
	e.umount()
	writeFile(t, sidFile, "00000000-0000-0000-0000-000000000000\n")
	e.run("mount", e.backing, e.mnt, "--key-ttl", "1s")
	if _, err := os.ReadFile(filepath.Join(e.mnt, tn.zone, "f0")); errnoOf(err) != syscall.EACCES {
		t.Errorf("the tenant's zone with a wrong secret ID: %v, want EACCES", err)
	}
	readBack(t, e, def, "f0", "default 0")
	checkHealth(t, e, "tenant", "permission denied")
	for _, p := range e.status().Providers {
		if p.MainKey == "tenant" && (strings.Contains(p.Error, "\n") || !strings.Contains(p.Error, "AppRole login") || !strings.Contains(p.Error, "invalid")) {
			t.Errorf("status: the tenant's error is not one clear line: %q", p.Error)
		}
	}
	// The table too: every main key version's health, and since when.
	if out := e.run("status", "--mount", e.mnt); !strings.Contains(out, "default v1 (system) ok since 20") ||
		!strings.Contains(out, "tenant v1 (vault) ERROR since 20") {
		t.Errorf("status does not show each main key's health and since when:\n%s", out)
	}
	var line string
	for _, l := range strings.Split(e.daemonLog(), "\n") {
		if strings.Contains(l, "unwrap kt@1 with main key tenant v1 (vault)") {
			line = l
		}
	}
	t.Logf("the daemon log on a wrong secret ID: %s", line)
	if !strings.Contains(line, "AppRole login") || !strings.Contains(line, "permission denied") || strings.Contains(line, secret) {
		t.Errorf("the daemon log does not say why on one line: %q", line)
	}
	// A new secret ID in the file: kms check asks at once (a failed open is otherwise
	// tried again at most every 2 s), and the zone serves again, without a remount.
	kmsCheck := func(wantOK bool) {
		t.Helper()
		var mks []control.MainKeyInfo
		decodeJSON(t, e.run("kms", "check", "tenant", "--json", "--mount", e.mnt), &mks)
		if len(mks) != 1 || mks[0].Health == nil || mks[0].Health.OK != wantOK {
			t.Errorf("kms check tenant: %+v, want healthy %v", mks, wantOK)
		}
	}
	kmsCheck(false)
	writeFile(t, sidFile, v.secretID()+"\n")
	kmsCheck(true) // well within 2 s of the failed attempt
	readBack(t, e, tn, "f1", "tenant 1")
	checkHealth(t, e, "tenant", "")
}

// TestVaultTokenFileReplaced: a main key whose Vault token is in a file (as a Vault
// Agent sink keeps it): once its token is revoked its zone answers EACCES; a new
// token written to the file serves again without a remount (the daemon reads the file
// again when a call is refused).
func TestVaultTokenFileReplaced(t *testing.T) {
	v := startVault(t)
	e := newEnv(t)
	tokFile := writeSecret(t, "token", v.token())
	e.run("kms", "create", "vt", "--mount", e.mnt, "--provider", "vault", "--vault-addr", v.addr, "--vault-key", "tenant-t",
		"--vault-token-file", tokFile)
	e.run("key", "create", "kt", "--main-key", "vt", "--mount", e.mnt)
	tn := tenant{main: "vt", key: "kt", zone: "zt"}
	e.zone(tn.zone, tn.key)
	for i := 0; i < 3; i++ {
		writeFile(t, filepath.Join(e.mnt, tn.zone, fmt.Sprint("f", i)), fmt.Sprint("vt ", i))
	}
	e.umount()
	e.run("mount", e.backing, e.mnt, "--key-ttl", "1s")
	readBack(t, e, tn, "f0", "vt 0")
	v.cli("token", "revoke", strings.TrimSpace(readFile(t, tokFile)))
	time.Sleep(2 * time.Second) // the cached zone key expires
	if _, err := os.ReadFile(filepath.Join(e.mnt, tn.zone, "f1")); errnoOf(err) != syscall.EACCES {
		t.Errorf("with the token revoked: %v, want EACCES", err)
	}
	writeFile(t, tokFile, v.token()+"\n")
	readBack(t, e, tn, "f1", "vt 1")
	readBack(t, e, tn, "f2", "vt 2")
	checkHealth(t, e, "vt", "")
}
