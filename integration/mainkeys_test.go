package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ezfs/ezfs/control"
)

// tenant is one main key of a multi-tenant mount, with the zone it protects.
type tenant struct {
	main, key, zone string
	create          []string // kms create flags; nil for the default main key
}

// writeSecret puts a credential in a 0600 file of the test and returns its path.
func writeSecret(t *testing.T, name, secret string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// token makes a token of its own on v (not the root token both dev servers share).
func (v *vaultServer) token() string {
	return strings.TrimSpace(v.cli("token", "create", "-field=token"))
}

// multiTenant is a mount whose default main key is system, with main keys on two
// tokens of one SoftHSM module and on two Vault servers, each with its own credential
// file, and a zone under each. The mount's own PIN and Vault variables are unset
// afterwards: only the recorded addresses and credential files serve the tenants.
func multiTenant(t *testing.T) (*env, []tenant) {
	softHSMConf(t)
	for _, tok := range []struct{ label, pin string }{{"tokA", "1111-a"}, {"tokB", "2222-b"}} {
		initToken(t, tok.label, tok.pin)
	}
	va, vb := startVault(t), startVault(t)
	t.Setenv("EZFS_EXTERNAL_KEY_PIN", "")
	e := newEnv(t)
	ts := []tenant{
		{main: "default", key: "kd", zone: "zd"},
		{main: "hsmA", key: "ka", zone: "za", create: []string{"--provider", "pkcs11", "--pkcs11-module", softhsmModule,
			"--pkcs11-token", "tokA", "--pkcs11-key", "tenant-a", "--pin-file", writeSecret(t, "pin-a", "1111-a")}},
		{main: "hsmB", key: "kb", zone: "zb", create: []string{"--provider", "pkcs11", "--pkcs11-module", softhsmModule,
			"--pkcs11-token", "tokB", "--pkcs11-key", "tenant-b", "--pin-file", writeSecret(t, "pin-b", "2222-b")}},
		{main: "vaultA", key: "kva", zone: "zva", create: []string{"--provider", "vault", "--vault-addr", va.addr,
			"--vault-key", "tenant-va", "--vault-token-file", writeSecret(t, "token-a", va.token())}},
		{main: "vaultB", key: "kvb", zone: "zvb", create: []string{"--provider", "vault", "--vault-addr", vb.addr,
			"--vault-key", "tenant-vb", "--vault-token-file", writeSecret(t, "token-b", vb.token())}},
	}
	for _, tn := range ts {
		if tn.create != nil {
			e.run(append([]string{"kms", "create", tn.main, "--mount", e.mnt}, tn.create...)...)
		}
		e.run("key", "create", tn.key, "--main-key", tn.main, "--mount", e.mnt)
		e.zone(tn.zone, tn.key)
		writeFile(t, filepath.Join(e.mnt, tn.zone, "f"), "data of "+tn.main)
	}
	t.Setenv("VAULT_ADDR", "http://127.0.0.1:1") // nothing listens: the daemon must not use it
	t.Setenv("VAULT_TOKEN", "")
	return e, ts
}

func writeFile(t *testing.T, p, data string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readBack(t *testing.T, e *env, tn tenant, name, want string) {
	t.Helper()
	got, err := os.ReadFile(filepath.Join(e.mnt, tn.zone, name))
	if err != nil || string(got) != want {
		t.Errorf("%s/%s (main key %s): %q %v, want %q", tn.zone, name, tn.main, got, err, want)
	}
}

func (e *env) describe(key string) control.KeyInfo {
	e.t.Helper()
	var ki control.KeyInfo
	decodeJSON(e.t, e.run("key", "describe", "--json", "--mount", e.mnt, key), &ki)
	return ki
}

// chain is each version of key as NAME@N<MAIN vM.
func (e *env) chain(key string) []string {
	e.t.Helper()
	var out []string
	for _, v := range e.describe(key).Versions {
		out = append(out, fmt.Sprintf("%s@%d<%s v%d", key, v.Version, v.MainKey, v.MainVersion))
	}
	return out
}

// TestMultiTenantMainKeys (criterion 1): one mount, a zone under each of five main
// keys: default (system), two tokens of one SoftHSM module, two Vault servers, each
// tenant with its own PIN or token file. All read back after a remount with the
// environment's Vault address pointing nowhere and no mount-wide PIN. Retiring one
// token's old version closes its provider, and the other token keeps unwrapping (the
// module is not finalized under it).
func TestMultiTenantMainKeys(t *testing.T) {
	e, ts := multiTenant(t)
	e.remount()
	for _, tn := range ts {
		readBack(t, e, tn, "f", "data of "+tn.main)
	}
	st := e.status()
	if len(st.Providers) != len(ts) {
		t.Errorf("status has %d main key versions, want %d: %+v", len(st.Providers), len(ts), st.Providers)
	}
	for _, p := range st.Providers {
		if !p.OK {
			t.Errorf("status: main key %s v%d (%s): %s", p.MainKey, p.MainVersion, p.Kind, p.Error)
		}
	}
	var mks []control.MainKeyInfo
	decodeJSON(t, e.run("kms", "show", "--json", "--mount", e.mnt), &mks)
	for _, mk := range mks {
		if mk.Name == "hsmB" && (mk.Settings["token"] != "tokB" || mk.Settings["module"] != softhsmModule ||
			!strings.HasPrefix(mk.Credential, "file ") || !reflect.DeepEqual(mk.ZoneKeys, []string{"kb@1"})) {
			t.Errorf("kms show hsmB: %+v", mk)
		}
		if mk.Name == "vaultB" && (!strings.HasPrefix(mk.Settings["address"], "http://127.0.0.1:") || mk.Settings["auth"] != "token") {
			t.Errorf("kms show vaultB: %+v", mk)
		}
	}
	// The secrets are nowhere in the keystore.
	raw, err := os.ReadFile(filepath.Join(e.ksDir(), "keystore.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"1111-a", "2222-b"} {
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("the keystore holds the PIN %q", secret)
		}
	}

	// Rotate hsmA on tokA, re-wrap, retire v1: v1's provider is closed.
	e.run("kms", "rotate", "hsmA", "--mount", e.mnt)
	e.run("kms", "rewrap", "hsmA", "--mount", e.mnt)
	e.run("kms", "retire", "hsmA", "1", "--mount", e.mnt)
	// A new zone key under hsmB needs a new unwrap on tokB now.
	e.run("key", "create", "kb2", "--main-key", "hsmB", "--mount", e.mnt)
	e.zone("zb2", "kb2")
	writeFile(t, filepath.Join(e.mnt, "zb2", "g"), "after tokA's v1 closed")
	b2 := tenant{main: "hsmB", zone: "zb2"}
	e.remount()
	readBack(t, e, b2, "g", "after tokA's v1 closed")
	e.run("key", "roll", "kb", "--mount", e.mnt)
	writeFile(t, filepath.Join(e.mnt, "zb", "h"), "under kb@2")
	e.run("kms", "rotate", "hsmA", "--mount", e.mnt)
	e.run("kms", "rewrap", "hsmA", "--mount", e.mnt)
	e.run("kms", "retire", "hsmA", "2", "--mount", e.mnt)
	readBack(t, e, ts[2], "h", "under kb@2")
	e.run("key", "roll", "kb", "--mount", e.mnt)
	writeFile(t, filepath.Join(e.mnt, "zb", "i"), "under kb@3")
	readBack(t, e, ts[2], "i", "under kb@3")
	if st := e.status(); !allOK(st) {
		t.Errorf("status after retiring tokA versions: %+v", st.Providers)
	}
}

func allOK(st control.Status) bool {
	for _, p := range st.Providers {
		if !p.OK {
			return false
		}
	}
	return true
}

// TestRotateOneMainKey (criterion 2): kms rotate of one main key changes nothing for
// the others (key describe, kms show --json); a roll of each zone key wraps under its
// own main key's current version.
func TestRotateOneMainKey(t *testing.T) {
	e, ts := multiTenant(t)
	type view struct {
		Name, Fingerprint, State string
		Version                  uint32
		Current                  bool
		ZoneKeys                 []string
	}
	show := func() map[string][]view {
		var mks []control.MainKeyInfo
		decodeJSON(t, e.run("kms", "show", "--json", "--mount", e.mnt), &mks)
		out := map[string][]view{}
		for _, mk := range mks {
			out[mk.Name] = append(out[mk.Name], view{mk.Name, mk.Fingerprint, mk.State, mk.Version, mk.Current, mk.ZoneKeys})
		}
		return out
	}
	beforeShow := show()
	beforeChains := map[string][]string{}
	for _, tn := range ts {
		beforeChains[tn.key] = e.chain(tn.key)
	}
	e.run("kms", "rotate", "vaultB", "--mount", e.mnt)
	e.run("kms", "rotate", "hsmB", "--mount", e.mnt)
	afterShow := show()
	for _, tn := range ts {
		if got := e.chain(tn.key); !reflect.DeepEqual(got, beforeChains[tn.key]) {
			t.Errorf("key describe %s after rotating vaultB and hsmB: %v, was %v", tn.key, got, beforeChains[tn.key])
		}
		rotated := tn.main == "vaultB" || tn.main == "hsmB"
		if !rotated && !reflect.DeepEqual(afterShow[tn.main], beforeShow[tn.main]) {
			t.Errorf("kms show %s changed: %+v, was %+v", tn.main, afterShow[tn.main], beforeShow[tn.main])
		}
		if rotated && (len(afterShow[tn.main]) != 2 || !afterShow[tn.main][1].Current || afterShow[tn.main][0].Current) {
			t.Errorf("kms show %s after its rotation: %+v", tn.main, afterShow[tn.main])
		}
	}
	for _, tn := range ts {
		e.run("key", "roll", tn.key, "--mount", e.mnt)
		want := "1"
		if tn.main == "vaultB" || tn.main == "hsmB" {
			want = "2"
		}
		chain := e.chain(tn.key)
		if got := chain[len(chain)-1]; got != tn.key+"@2<"+tn.main+" v"+want {
			t.Errorf("after key roll %s: %s, want under %s v%s", tn.key, got, tn.main, want)
		}
		writeFile(t, filepath.Join(e.mnt, tn.zone, "g"), "second of "+tn.main)
	}
	e.remount()
	for _, tn := range ts {
		readBack(t, e, tn, "f", "data of "+tn.main)
		readBack(t, e, tn, "g", "second of "+tn.main)
	}
	out := e.run("key", "describe", "kvb", "--mount", e.mnt)
	if !strings.Contains(out, "main key vaultB v1 (vault)") || !strings.Contains(out, "main key vaultB v2 (vault)") {
		t.Errorf("key describe kvb:\n%s", out)
	}
}

// TestSetMainKey (criterion 4): key set-main moves a zone key to a tenant's main key
// and back; its files stay readable throughout (also with an empty key cache), their
// EDEKs do not change, and key describe shows the chain.
func TestSetMainKey(t *testing.T) {
	e, ts := multiTenant(t)
	d := ts[0]
	e.run("key", "roll", d.key, "--mount", e.mnt)
	writeFile(t, filepath.Join(e.mnt, d.zone, "g"), "under kd@2")
	files := map[string]string{"f": "data of default", "g": "under kd@2"}
	edeks := map[string][]byte{}
	for n := range files {
		edeks[n], _ = edekOf(t, filepath.Join(e.backing, d.zone, n))
	}
	check := func(when string) {
		t.Helper()
		for n, want := range files {
			readBack(t, e, d, n, want)
			if got, _ := edekOf(t, filepath.Join(e.backing, d.zone, n)); !bytes.Equal(got, edeks[n]) {
				t.Errorf("%s: the EDEK of %s changed", when, n)
			}
		}
	}
	for _, main := range []string{"vaultB", "hsmA", "default"} {
		e.run("key", "set-main", d.key, main, "--mount", e.mnt)
		chain := e.chain(d.key)
		for i, got := range chain {
			if want := fmt.Sprintf("%s@%d<%s v1", d.key, i+1, main); got != want {
				t.Errorf("key describe after set-main %s: %v, want every version under %s v1", main, chain, main)
			}
		}
		if ki := e.describe(d.key); ki.MainKey != main {
			t.Errorf("key describe: main key %q, want %q", ki.MainKey, main)
		}
		check("after set-main " + main)
		e.remount() // an empty cache: the unwraps go to the new main key
		check("after set-main " + main + " and a remount")
		e.run("key", "roll", d.key, "--mount", e.mnt)
		chain = e.chain(d.key)
		if got := chain[len(chain)-1]; !strings.HasSuffix(got, "<"+main+" v1") {
			t.Errorf("a roll after set-main %s: %s", main, got)
		}
	}
	out := e.run("key", "describe", d.key, "--mount", e.mnt)
	if !strings.Contains(out, "main key default") || !strings.Contains(out, "main key default v1 (system)") {
		t.Errorf("key describe:\n%s", out)
	}
	e.fails("main key \"nosuch\"", "key", "set-main", d.key, "nosuch", "--mount", e.mnt)
}

// TestGoldenKeystore (criterion 8): a backing dir and keystore made by the code from
// before named main keys (testdata/golden-v0, never regenerated) mounts and reads;
// its main key is `default` v1 and its zone key is wrapped under it.
func TestGoldenKeystore(t *testing.T) {
	d := tempDir(t)
	e := &env{t: t, backing: filepath.Join(d, "backing"), mnt: filepath.Join(d, "mnt")}
	for _, p := range []string{filepath.Join(e.backing, ".ezfs"), e.mnt} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("tar", "--xattrs", "--xattrs-include=user.*", "-xpf", "testdata/golden-v0/backing.tar", "-C", e.backing).CombinedOutput(); err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
	raw, err := os.ReadFile("../keystore/testdata/golden-v0/keystore.db")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.backing, ".ezfs", "keystore.db"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	pass, err := os.ReadFile("../keystore/testdata/golden-v0/passphrase")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("EZFS_PASSPHRASE", string(pass))
	t.Cleanup(e.cleanup)
	e.mount()
	got, err := os.ReadFile(filepath.Join(e.mnt, "z", "hello.txt"))
	if err != nil || string(got) != "golden file made by ezfs be04e78\n" {
		t.Fatalf("golden file: %q %v", got, err)
	}
	var mks []control.MainKeyInfo
	decodeJSON(t, e.run("kms", "show", "--json", "--mount", e.mnt), &mks)
	if len(mks) != 1 || mks[0].Name != "default" || mks[0].Version != 1 || !mks[0].Current || !reflect.DeepEqual(mks[0].ZoneKeys, []string{"k@1"}) {
		t.Errorf("kms show: %+v", mks)
	}
	if got := e.chain("k"); !reflect.DeepEqual(got, []string{"k@1<default v1"}) {
		t.Errorf("key describe k: %v", got)
	}
	writeFile(t, filepath.Join(e.mnt, "z", "new"), "after the upgrade")
	e.remount()
	for n, want := range map[string]string{"hello.txt": "golden file made by ezfs be04e78\n", "new": "after the upgrade"} {
		if got, err := os.ReadFile(filepath.Join(e.mnt, "z", n)); err != nil || string(got) != want {
			t.Errorf("%s after remount: %q %v", n, got, err)
		}
	}
}

// TestSwitchDefaultToken (criterion 3): default's v1 is on token C (the mount's PIN),
// kms set default moves it to token A (its own PIN file): after a remount files under
// both versions read; after kms rewrap default, v1 is retired and the mount needs no
// PIN of its own any more.
func TestSwitchDefaultToken(t *testing.T) {
	softHSMConf(t)
	initToken(t, "tokC", "3333-c")
	initToken(t, "tokA", "1111-a")
	t.Setenv("EZFS_EXTERNAL_KEY_PIN", "3333-c")
	e := newEnvInit(t, []string{"--provider", "pkcs11", "--pkcs11-module", softhsmModule, "--pkcs11-token", "tokC", "--pkcs11-key", "mk"})
	zone := e.zone("z", "k")
	writeFile(t, filepath.Join(zone, "one"), "under k@1, default v1 on tokC")
	e.run("kms", "set", "default", "--mount", e.mnt, "--provider", "pkcs11", "--pkcs11-module", softhsmModule,
		"--pkcs11-token", "tokA", "--pkcs11-key", "mk2", "--pin-file", writeSecret(t, "pin-a", "1111-a"))
	e.run("key", "roll", "k", "--mount", e.mnt)
	writeFile(t, filepath.Join(zone, "two"), "under k@2, default v2 on tokA")
	// At once, before a remount (the first failure), and after one.
	check := func(when string) {
		t.Helper()
		for n, want := range map[string]string{"one": "under k@1, default v1 on tokC", "two": "under k@2, default v2 on tokA"} {
			if got, err := os.ReadFile(filepath.Join(zone, n)); err != nil || string(got) != want {
				t.Errorf("%s: %s: %q %v", when, n, got, err)
			}
		}
	}
	writeFile(t, filepath.Join(zone, "three"), "written at once")
	e.remount()
	check("after a remount")
	if got := e.chain("k"); !reflect.DeepEqual(got, []string{"k@1<default v1", "k@2<default v2"}) {
		t.Errorf("key describe: %v", got)
	}
	e.fails("still wraps k@1", "kms", "retire", "default", "1", "--mount", e.mnt)
	e.run("kms", "rewrap", "default", "--mount", e.mnt)
	e.run("kms", "retire", "default", "1", "--mount", e.mnt)
	if got := e.chain("k"); !reflect.DeepEqual(got, []string{"k@1<default v2", "k@2<default v2"}) {
		t.Errorf("key describe after rewrap: %v", got)
	}
	e.umount()
	if out, errOut, err := ezfsEnv([]string{"EZFS_EXTERNAL_KEY_PIN="}, "mount", e.backing, e.mnt); err != nil {
		t.Fatalf("mount without the mount's PIN after retiring v1: %v %s %s", err, out, errOut)
	}
	check("after retiring v1, mounted without a PIN")
}

// TestTenantVaultDown (criterion 5): the second Vault is sealed while mounted: once its
// cache entry expires (--key-ttl), its zone's unwraps fail with EIO and the reason in
// the log, the other zones keep working, status says so and since when; unsealed, it
// works again without a remount. Mounting while it is sealed succeeds; its zone is EIO.
// A revoked token file answers EACCES.
func TestTenantVaultDown(t *testing.T) {
	e, ts := multiTenant(t)
	vb, va := ts[4], ts[3]
	// A file's node keeps its cipher once opened: every check opens a file not opened
	// since the mount, which needs its zone key.
	for _, tn := range ts {
		for i := 1; i <= 4; i++ {
			writeFile(t, filepath.Join(e.mnt, tn.zone, fmt.Sprint("n", i)), fmt.Sprint(tn.main, " ", i))
		}
	}
	servers := vaultServers(t, e)
	mountTTL := func() {
		t.Helper()
		e.run("mount", e.backing, e.mnt, "--key-ttl", "1s")
	}
	fresh := func(tn tenant, i int, want syscall.Errno) {
		t.Helper()
		got, err := os.ReadFile(filepath.Join(e.mnt, tn.zone, fmt.Sprint("n", i)))
		if errnoOf(err) != want || (want == 0 && string(got) != fmt.Sprint(tn.main, " ", i)) {
			t.Errorf("%s/n%d (main key %s): %q %v, want errno %d", tn.zone, i, tn.main, got, err, want)
		}
	}
	e.umount()
	mountTTL()
	for _, tn := range ts {
		readBack(t, e, tn, "f", "data of "+tn.main)
	}
	servers["vaultB"].seal()
	time.Sleep(2 * time.Second) // the cached zone keys expire
	fresh(vb, 1, syscall.EIO)
	for _, tn := range ts[:4] {
		fresh(tn, 1, 0)
	}
	checkHealth(t, e, "vaultB", "sealed")
	if log := e.daemonLog(); !strings.Contains(log, "unwrap kvb@1 with main key vaultB v1 (vault)") || !strings.Contains(log, "sealed") {
		t.Errorf("the log does not say why:\n%s", log)
	}
	servers["vaultB"].unseal()
	fresh(vb, 1, 0)
	checkHealth(t, e, "vaultB", "")

	e.umount()
	servers["vaultB"].seal()
	mountTTL()
	fresh(vb, 2, syscall.EIO)
	for _, tn := range ts[:4] {
		fresh(tn, 2, 0)
	}
	checkHealth(t, e, "vaultB", "sealed")
	servers["vaultB"].unseal()
	fresh(vb, 2, 0)

	// vaultA's token is revoked: EACCES for its zone once its cache entry expires.
	servers["vaultA"].cli("token", "revoke", strings.TrimSpace(readFile(t, credentialFileOf(t, e, "vaultA"))))
	time.Sleep(2 * time.Second)
	fresh(va, 3, syscall.EACCES)
	fresh(ts[0], 3, 0)
	fresh(vb, 3, 0)
	checkHealth(t, e, "vaultA", "permission denied")
}

// vaultServers maps the Vault main keys of e to the servers they recorded.
func vaultServers(t *testing.T, e *env) map[string]*vaultServer {
	t.Helper()
	out := map[string]*vaultServer{}
	var mks []control.MainKeyInfo
	decodeJSON(t, e.run("kms", "show", "--json", "--mount", e.mnt), &mks)
	for _, mk := range mks {
		if mk.Provider == "vault" {
			out[mk.Name] = &vaultServer{t: t, bin: vaultBin, addr: mk.Settings["address"]}
		}
	}
	for _, v := range out {
		v.unsealKey = unsealKeys[v.addr]
	}
	return out
}

func credentialFileOf(t *testing.T, e *env, name string) string {
	t.Helper()
	var mks []control.MainKeyInfo
	decodeJSON(t, e.run("kms", "show", name, "--json", "--mount", e.mnt), &mks)
	return strings.TrimPrefix(mks[0].Credential, "file ")
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkHealth checks what status says of main key name: healthy when want is "",
// else an error saying want, with a time since when.
func checkHealth(t *testing.T, e *env, name, want string) {
	t.Helper()
	for _, p := range e.status().Providers {
		if p.MainKey != name {
			if !p.OK {
				t.Errorf("status: main key %s is down too: %s", p.MainKey, p.Error)
			}
			continue
		}
		switch {
		case want == "" && !p.OK:
			t.Errorf("status: main key %s: %s, want healthy", name, p.Error)
		case want != "" && (p.OK || !strings.Contains(p.Error, want) || p.Since.IsZero()):
			t.Errorf("status: main key %s: %+v, want an error saying %q and since when", name, p, want)
		}
	}
}

// TestMainKeyStress (criterion 7): files are created and read back in every zone
// while the tenants' main keys are rotated, re-wrapped and retired and zone keys
// rolled in a loop, with a 1 s key cache: no EIO for keys that stay available, no
// panic, the daemon still serves at the end.
func TestMainKeyStress(t *testing.T) {
	e, ts := multiTenant(t)
	e.umount()
	e.run("mount", e.backing, e.mnt, "--key-ttl", "1s")
	stop := make(chan struct{})
	errs := make(chan error, 100)
	var wg sync.WaitGroup
	for _, tn := range ts {
		for w := 0; w < 2; w++ {
			wg.Add(1)
			go func(tn tenant, w int) {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					p := filepath.Join(e.mnt, tn.zone, fmt.Sprintf("s%d-%d", w, i))
					want := fmt.Sprintf("%s %d %d", tn.main, w, i)
					if err := os.WriteFile(p, []byte(want), 0o644); err != nil {
						errs <- fmt.Errorf("write %s: %w", p, err)
						return
					}
					if got, err := os.ReadFile(p); err != nil || string(got) != want {
						errs <- fmt.Errorf("read %s: %q %v", p, got, err)
						return
					}
				}
			}(tn, w)
		}
	}
	admin := func(args ...string) {
		if _, errOut, err := ezfs(append(args, "--mount", e.mnt)...); err != nil {
			errs <- fmt.Errorf("ezfs %s: %v: %s", strings.Join(args, " "), err, errOut)
		}
	}
	deadline := time.Now().Add(12 * time.Second)
	rounds := 0
	for v := uint32(2); time.Now().Before(deadline) && len(errs) == 0; v++ {
		for _, main := range []string{"hsmB", "vaultA"} {
			admin("kms", "rotate", main)
		}
		admin("kms", "set", "vaultB", "--provider", "vault", "--vault-addr", vaultServers(t, e)["vaultB"].addr,
			"--vault-key", fmt.Sprint("tenant-vb-", v), "--vault-token-file", credentialFileOf(t, e, "vaultB"))
		for _, tn := range ts {
			admin("key", "roll", tn.key)
		}
		for _, main := range []string{"hsmB", "vaultA", "vaultB"} {
			admin("kms", "rewrap", main)
			admin("kms", "retire", main, fmt.Sprint(v-1))
		}
		rounds++
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d rounds of rotate, set, roll, rewrap and retire", rounds)
	if rounds < 2 {
		t.Errorf("only %d rounds", rounds)
	}
	if log := e.daemonLog(); strings.Contains(log, "panic") || strings.Contains(log, "EIO on") {
		t.Errorf("the daemon log:\n%s", log)
	}
	e.remount()
	for _, tn := range ts {
		readBack(t, e, tn, "f", "data of "+tn.main)
	}
}

// TestTransitRotationDetected (criterion 6): a Transit key rotated in Vault itself is
// noticed within the poll interval, enrolled as the main key's next version, the zone
// key versions it protects are re-wrapped under it, kms show and the audit log say so,
// and the files read with an empty cache afterwards.
func TestTransitRotationDetected(t *testing.T) {
	v := startVault(t)
	e := newEnv(t)
	e.run("kms", "create", "vt", "--mount", e.mnt, "--provider", "vault", "--vault-key", "tenant-t",
		"--vault-token-file", writeSecret(t, "token", v.token()))
	e.run("key", "create", "kt", "--main-key", "vt", "--mount", e.mnt)
	zone := e.zone("z", "kt")
	e.zone("zd", "kd")
	writeFile(t, filepath.Join(zone, "f"), "under vt v1")
	e.run("key", "roll", "kt", "--mount", e.mnt)
	writeFile(t, filepath.Join(zone, "g"), "under kt@2")
	e.umount()
	e.run("mount", e.backing, e.mnt, "--kms-poll", "1s")
	v.cli("write", "-f", "transit/keys/tenant-t/rotate")
	var mks []control.MainKeyInfo
	for i := 0; i < 100; i++ {
		decodeJSON(t, e.run("kms", "show", "vt", "--json", "--mount", e.mnt), &mks)
		if len(mks) == 2 && mks[1].ZoneKeyVersions == 2 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(mks) != 2 || !mks[1].Current || mks[1].Origin != "detected" || !strings.HasSuffix(mks[1].KeyRef, "tenant-t v2") ||
		!reflect.DeepEqual(mks[1].ZoneKeys, []string{"kt@1", "kt@2"}) || len(mks[0].ZoneKeys) != 0 {
		t.Fatalf("kms show vt after the rotation in Vault: %+v", mks)
	}
	if out := e.run("kms", "show", "vt", "--mount", e.mnt); !strings.Contains(out, "detected in the provider") {
		t.Errorf("kms show:\n%s", out)
	}
	if got := e.chain("kd"); !reflect.DeepEqual(got, []string{"kd@1<default v1"}) {
		t.Errorf("the default key's zone key moved: %v", got)
	}
	e.remount()
	for n, want := range map[string]string{"f": "under vt v1", "g": "under kt@2"} {
		if got, err := os.ReadFile(filepath.Join(zone, n)); err != nil || string(got) != want {
			t.Errorf("%s after the rotation and a remount: %q %v", n, got, err)
		}
	}
	audit := readFile(t, filepath.Join(e.ksDir(), "audit.log"))
	if !strings.Contains(audit, `"op":"kms.detected"`) || !strings.Contains(audit, `"after":"kms.detected"`) {
		t.Errorf("the audit log does not record the detection:\n%s", audit)
	}
	// Retiring v1 is allowed now: nothing depends on it.
	e.run("kms", "retire", "vt", "1", "--mount", e.mnt)
}

// TestCredentialEnv: a main key whose credential is an environment variable of
// `ezfs mount` (--credential-env): the keystore records the name only, the daemon has
// the value on its pipe and not in /proc/PID/environ; mounted without it, that zone
// answers EACCES and the default's zone works.
func TestCredentialEnv(t *testing.T) {
	e := newEnv(t)
	const secret = "tenant passphrase from the environment"
	if out, errOut, err := ezfsEnv([]string{"TENANT_PASS=" + secret}, "kms", "create", "tenant", "--mount", e.mnt,
		"--provider", "system", "--credential-env", "TENANT_PASS"); err != nil {
		t.Fatalf("kms create: %v %s %s", err, out, errOut)
	}
	e.run("key", "create", "kt", "--main-key", "tenant", "--mount", e.mnt)
	zt, zd := e.zone("zt", "kt"), e.zone("zd", "kd")
	writeFile(t, filepath.Join(zt, "f"), "tenant data")
	writeFile(t, filepath.Join(zd, "f"), "default data")
	e.umount()
	if raw := readFile(t, filepath.Join(e.ksDir(), "keystore.db")); strings.Contains(raw, secret) || !strings.Contains(raw, "TENANT_PASS") {
		t.Errorf("the keystore holds the secret, or not the variable's name")
	}
	if out, errOut, err := ezfsEnv([]string{"TENANT_PASS=" + secret, "VAULT_TOKEN=" + pinValue}, "mount", e.backing, e.mnt); err != nil {
		t.Fatalf("mount: %v %s %s", err, out, errOut)
	}
	pid := e.daemonPID()
	for _, f := range []string{"environ", "cmdline"} {
		if b := readFile(t, fmt.Sprintf("/proc/%d/%s", pid, f)); strings.Contains(b, secret) || strings.Contains(b, pinValue) {
			t.Errorf("/proc/%d/%s holds a secret", pid, f)
		}
	}
	readBack(t, e, tenant{main: "tenant", zone: "zt"}, "f", "tenant data")
	e.umount()
	if out, errOut, err := ezfsEnv([]string{"TENANT_PASS="}, "mount", e.backing, e.mnt); err != nil {
		t.Fatalf("mount without the tenant's variable: %v %s %s", err, out, errOut)
	}
	if _, err := os.ReadFile(filepath.Join(zt, "f")); errnoOf(err) != syscall.EACCES {
		t.Errorf("the tenant's zone without its credential: %v, want EACCES", err)
	}
	readBack(t, e, tenant{main: "default", zone: "zd"}, "f", "default data")
}
