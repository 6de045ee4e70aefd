package integration

import (
	"bufio"
	"bytes"
	cryptotls "crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ezfs/ezfs/control"
)

var (
	// unsealKeys are the unseal keys of the dev servers started, by address.
	unsealKeys   = map[string]string{}
	unsealKeysMu sync.Mutex

	vaultOnce sync.Once
	vaultBin  string
	vaultErr  error
)

// rootToken is the root token of every dev server the tests start.
const rootToken = "ezfs-test-root-token"

// vaultServer is a real `vault server -dev` on a random loopback port.
type vaultServer struct {
	t         *testing.T
	bin, addr string
	unsealKey string
	ca        string // the CA file of a TLS server (-dev-tls); "" for plain HTTP
}

// startVault builds (or takes from the cache) the Vault server with scripts/vault.sh,
// starts a dev server with the Transit engine, and points VAULT_ADDR and VAULT_TOKEN at
// it for this test.
func startVault(t *testing.T) *vaultServer {
	t.Helper()
	return startVaultTLS(t, false)
}

// startVaultTLS is startVault; with tls, a server on HTTPS (-dev-tls) whose CA file is
// v.ca (the environment's VAULT_CACERT is not set to it).
func startVaultTLS(t *testing.T, tls bool) *vaultServer {
	t.Helper()
	vaultOnce.Do(func() {
		out, err := exec.Command("../scripts/vault.sh").Output()
		vaultBin, vaultErr = strings.TrimSpace(string(out)), err
	})
	if vaultErr != nil {
		t.Fatalf("scripts/vault.sh: %v", vaultErr)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	const token = rootToken
	args := []string{"server", "-dev", "-dev-listen-address=" + addr, "-dev-root-token-id=" + token, "-dev-no-store-token"}
	scheme, certDir := "http", ""
	if tls {
		scheme, certDir = "https", t.TempDir()
		args = append(args, "-dev-tls", "-dev-tls-cert-dir="+certDir)
	}
	cmd := exec.Command(vaultBin, args...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
		}
	})
	v := &vaultServer{t: t, bin: vaultBin, addr: scheme + "://" + addr}
	hc := http.DefaultClient
	if tls {
		v.ca = filepath.Join(certDir, "vault-ca.pem")
		hc = &http.Client{Transport: &http.Transport{TLSClientConfig: &cryptotls.Config{InsecureSkipVerify: true}}} // only the health probe
	}
	keyCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if k, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "Unseal Key: "); ok {
				keyCh <- k
			}
		}
	}()
	select {
	case v.unsealKey = <-keyCh:
		unsealKeysMu.Lock()
		unsealKeys[v.addr] = v.unsealKey
		unsealKeysMu.Unlock()
	case <-time.After(60 * time.Second):
		t.Fatal("vault dev server did not start")
	}
	t.Setenv("VAULT_ADDR", v.addr)
	t.Setenv("VAULT_TOKEN", token)
	for i := 0; ; i++ {
		resp, err := hc.Get(v.addr + "/v1/sys/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if i > 100 {
			t.Fatalf("vault not healthy: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	v.cli("secrets", "enable", "transit")
	return v
}

func (v *vaultServer) cli(args ...string) string {
	v.t.Helper()
	cmd := exec.Command(v.bin, args...)
	cmd.Env = append(os.Environ(), "VAULT_ADDR="+v.addr) // this server, whichever the test's environment names
	if v.ca != "" {
		cmd.Env = append(cmd.Env, "VAULT_CACERT="+v.ca)
	}
	if os.Getenv("VAULT_TOKEN") == "" {
		cmd.Env = append(cmd.Env, "VAULT_TOKEN="+rootToken)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		v.t.Fatalf("vault %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (v *vaultServer) seal()   { v.cli("operator", "seal") }
func (v *vaultServer) unseal() { v.cli("operator", "unseal", v.unsealKey) }

// TestVault: the main key is a Transit RSA key; while Vault is sealed, zones whose key
// is already unwrapped keep working and the others fail with EIO and a logged reason;
// after unsealing they work again without a remount.
func TestVault(t *testing.T) {
	v := startVault(t)
	e := newEnvInit(t, []string{"--provider", "vault", "--vault-key", "ezfs-main"})
	mks := e.mainKeys()
	if len(mks) != 1 || mks[0].Provider != "vault" || mks[0].OAEPHash != "SHA-256" || !strings.Contains(mks[0].KeyRef, "transit/keys/ezfs-main v1") {
		t.Errorf("kms show: %+v", mks)
	}
	za, zb := e.zone("a", "ka"), e.zone("b", "kb")
	for _, z := range []string{za, zb} {
		if err := os.WriteFile(filepath.Join(z, "f"), []byte("data in "+z), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e.remount() // empty key cache
	if got, err := os.ReadFile(filepath.Join(za, "f")); err != nil || string(got) != "data in "+za {
		t.Fatalf("zone a: %v", err)
	}
	v.seal()
	if got, err := os.ReadFile(filepath.Join(za, "f")); err != nil || string(got) != "data in "+za {
		t.Errorf("zone a with Vault sealed (its key is cached): %v", err)
	}
	if _, err := os.ReadFile(filepath.Join(zb, "f")); errnoOf(err) != syscall.EIO {
		t.Errorf("zone b with Vault sealed: %v, want EIO", err)
	}
	var st []control.Status
	decodeJSON(t, e.run("status", "--json", "--mount", e.mnt), &st)
	if len(st) != 1 || st[0].ProviderOK || !strings.Contains(st[0].ProviderErr, "sealed") {
		t.Errorf("status with Vault sealed: %+v", st)
	}
	log, _ := os.ReadFile(filepath.Join(e.backing, ".ezfs", "ezfs.log"))
	if !strings.Contains(string(log), "unwrap kb@1 with main key default v1 (vault)") || !strings.Contains(string(log), "unavailable") {
		t.Errorf("the log does not name provider, key version and reason:\n%s", log)
	}
	v.unseal()
	if got, err := os.ReadFile(filepath.Join(zb, "f")); err != nil || string(got) != "data in "+zb {
		t.Errorf("zone b after unseal, without remount: %v", err)
	}
	decodeJSON(t, e.run("status", "--json", "--mount", e.mnt), &st)
	if !st[0].ProviderOK {
		t.Errorf("status after unseal: %+v", st)
	}
	// Mounting while Vault is sealed fails at once, saying why.
	e.umount()
	checkAudit(t, e, passphrase)
	v.seal()
	start := time.Now()
	e.fails("sealed", "mount", e.backing, e.mnt)
	t.Logf("mount with Vault sealed failed after %v", time.Since(start))
	v.unseal()
	e.mount()
	if got, err := os.ReadFile(filepath.Join(zb, "f")); err != nil || !bytes.Equal(got, []byte("data in "+zb)) {
		t.Errorf("after remount: %v", err)
	}
}

// TestVaultRevokedToken: a mount whose Vault token loses its rights keeps the zones
// whose keys it holds and answers EACCES, with the reason in its log, for the others.
func TestVaultRevokedToken(t *testing.T) {
	v := startVault(t)
	e := newEnvInit(t, []string{"--provider", "vault", "--vault-key", "ezfs-main"})
	za, zb := e.zone("a", "ka"), e.zone("b", "kb")
	for _, z := range []string{za, zb} {
		if err := os.WriteFile(filepath.Join(z, "f"), []byte("data in "+z), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e.umount()
	policy := filepath.Join(t.TempDir(), "ezfs.hcl")
	if err := os.WriteFile(policy, []byte(`path "transit/decrypt/ezfs-main" { capabilities = ["update"] }`), 0o644); err != nil {
		t.Fatal(err)
	}
	v.cli("policy", "write", "ezfs-decrypt", policy)
	t.Setenv("VAULT_TOKEN", strings.TrimSpace(v.cli("token", "create", "-policy=ezfs-decrypt", "-field=token")))
	e.mount()
	if got, err := os.ReadFile(filepath.Join(za, "f")); err != nil || string(got) != "data in "+za {
		t.Fatalf("zone a with a decrypt-only token: %q %v", got, err)
	}
	v.cli("token", "revoke", "-self")
	if got, err := os.ReadFile(filepath.Join(za, "f")); err != nil || string(got) != "data in "+za {
		t.Errorf("zone a after the token is revoked (its key is cached): %q %v", got, err)
	}
	if _, err := os.ReadFile(filepath.Join(zb, "f")); errnoOf(err) != syscall.EACCES {
		t.Errorf("zone b after the token is revoked: %v, want EACCES", err)
	}
	log, _ := os.ReadFile(filepath.Join(e.backing, ".ezfs", "ezfs.log"))
	if !strings.Contains(string(log), "unwrap kb@1 with main key default v1 (vault)") || !strings.Contains(string(log), "permission denied") {
		t.Errorf("the log does not name key version and reason:\n%s", log)
	}
}

// TestRotationChain: system main key v1, then Vault as v2; a roll wraps under v2; after
// a rewrap nothing needs v1, which is retired, and the mount needs no passphrase.
func TestRotationChain(t *testing.T) {
	startVault(t)
	e := newEnv(t)
	zone := e.zone("z", "k")
	if err := os.WriteFile(filepath.Join(zone, "one"), []byte("under k@1"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.run("kms", "set", "--mount", e.mnt, "--provider", "vault", "--vault-key", "chain")
	e.run("key", "roll", "--mount", e.mnt, "k")
	if err := os.WriteFile(filepath.Join(zone, "two"), []byte("under k@2"), 0o644); err != nil {
		t.Fatal(err)
	}
	describe := func() []control.KeyVersion {
		var ki control.KeyInfo
		decodeJSON(t, e.run("key", "describe", "--json", "--mount", e.mnt, "k"), &ki)
		return ki.Versions
	}
	vs := describe()
	if len(vs) != 2 || vs[0].MainVersion != 1 || vs[0].MainProvider != "system" || vs[1].MainVersion != 2 || vs[1].MainProvider != "vault" {
		t.Fatalf("key describe after kms set + roll: %+v", vs)
	}
	out := e.run("key", "describe", "--mount", e.mnt, "k")
	if !strings.Contains(out, "main key default v1 (system)") || !strings.Contains(out, "main key default v2 (vault)") {
		t.Errorf("key describe:\n%s", out)
	}
	check := func() {
		t.Helper()
		for n, want := range map[string]string{"one": "under k@1", "two": "under k@2"} {
			if got, err := os.ReadFile(filepath.Join(zone, n)); err != nil || string(got) != want {
				t.Errorf("read %s: %q %v", n, got, err)
			}
		}
	}
	check()
	e.fails("still wraps k@1", "kms", "retire", "--mount", e.mnt, "1")
	e.run("kms", "rewrap", "--mount", e.mnt)
	if vs := describe(); vs[0].MainVersion != 2 || vs[1].MainVersion != 2 {
		t.Errorf("after rewrap: %+v", vs)
	}
	e.run("kms", "retire", "--mount", e.mnt, "1")
	mks := e.mainKeys()
	if len(mks) != 2 || mks[0].State != "retired" || mks[0].ZoneKeyVersions != 0 || !mks[1].Current || mks[1].ZoneKeyVersions != 2 {
		t.Errorf("kms show after retire: %+v", mks)
	}
	e.umount()
	// The system key is retired: no passphrase is needed any more.
	if out, errOut, err := ezfsEnv([]string{"EZFS_PASSPHRASE="}, "mount", e.backing, e.mnt); err != nil {
		t.Fatalf("mount without a passphrase after retiring the system key: %v %s %s", err, out, errOut)
	}
	check()
}

// checkAudit reads the audit log: provider calls grouped per key version and result,
// admin actions, and never a secret.
func checkAudit(t *testing.T, e *env, secrets ...string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(e.backing, ".ezfs", "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	results := map[string]bool{}
	ops := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		if rec["type"] == "provider" {
			results[fmt.Sprintf("%v@%v %v", rec["key"], rec["key_version"], rec["result"])] = true
			if n, _ := rec["count"].(float64); n < 1 {
				t.Errorf("provider line without a count: %s", line)
			}
		} else {
			ops[fmt.Sprint(rec["op"])] = true
		}
	}
	for _, want := range []string{"ka@1 ok", "kb@1 ok", "kb@1 unavailable"} {
		if !results[want] {
			t.Errorf("audit log has no unwrap group %q: %v", want, results)
		}
	}
	for _, want := range []string{"init", "mount", "key.create", "zone.create", "unmount"} {
		if !ops[want] {
			t.Errorf("audit log has no %q action: %v", want, ops)
		}
	}
	for _, s := range append(secrets, "ezfs-test-root-token") {
		if strings.Contains(string(raw), s) {
			t.Errorf("audit log contains a secret %q", s)
		}
	}
}

// TestVaultRecordedCA: a main key on a Vault server with TLS records its CA file
// (--vault-cacert); the daemon uses it, with no VAULT_CACERT in its environment, across
// a remount. Without the CA the server is refused at kms create.
func TestVaultRecordedCA(t *testing.T) {
	v := startVaultTLS(t, true)
	e := newEnv(t)
	tok := writeSecret(t, "token", v.token())
	t.Setenv("VAULT_CACERT", "")
	e.fails("certificate", "kms", "create", "vt", "--mount", e.mnt, "--provider", "vault", "--vault-addr", v.addr,
		"--vault-key", "tenant-t", "--vault-token-file", tok)
	e.run("kms", "create", "vt", "--mount", e.mnt, "--provider", "vault", "--vault-addr", v.addr, "--vault-cacert", v.ca,
		"--vault-key", "tenant-t", "--vault-token-file", tok)
	if got := e.mainKeysOf("vt"); len(got) != 1 || got[0].Settings["ca_cert"] != v.ca || !strings.HasPrefix(got[0].Settings["address"], "https://") {
		t.Errorf("kms show vt: %+v", got)
	}
	e.run("key", "create", "kt", "--main-key", "vt", "--mount", e.mnt)
	tn := tenant{main: "vt", key: "kt", zone: "zt"}
	e.zone(tn.zone, tn.key)
	writeFile(t, filepath.Join(e.mnt, tn.zone, "f"), "over TLS")
	t.Setenv("VAULT_ADDR", "http://127.0.0.1:1")
	e.remount()
	readBack(t, e, tn, "f", "over TLS")
	checkHealth(t, e, "vt", "")
}

func (e *env) mainKeysOf(name string) []control.MainKeyInfo {
	e.t.Helper()
	var mks []control.MainKeyInfo
	decodeJSON(e.t, e.run("kms", "show", name, "--json", "--mount", e.mnt), &mks)
	return mks
}
