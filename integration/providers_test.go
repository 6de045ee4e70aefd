package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ezfs/ezfs/control"
	"github.com/ezfs/ezfs/keystore"
	p11 "github.com/miekg/pkcs11"
)

const (
	softhsmModule = "/usr/lib/softhsm/libsofthsm2.so"
	tokenLabel    = "ezfs-test"
	tokenPIN      = "4711-test"
)

// softHSM makes a fresh SoftHSM2 token in a temporary folder for this test and points
// SOFTHSM2_CONF and EZFS_EXTERNAL_KEY_PIN at it.
func softHSM(t *testing.T) {
	t.Helper()
	softHSMConf(t)
	initToken(t, tokenLabel, tokenPIN)
	t.Setenv("EZFS_EXTERNAL_KEY_PIN", tokenPIN)
}

// softHSMConf points SOFTHSM2_CONF at an empty token folder of this test.
func softHSMConf(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.MkdirAll(filepath.Join(dir, "tokens"), 0o700); err != nil {
		t.Fatal(err)
	}
	err := os.WriteFile(conf, []byte("directories.tokendir = "+filepath.Join(dir, "tokens")+
		"\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
}

// initToken makes a token labelled label with user PIN pin in the test's SoftHSM.
func initToken(t *testing.T, label, pin string) {
	t.Helper()
	out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", label,
		"--so-pin", "so-"+pin, "--pin", pin).CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util: %v: %s", err, out)
	}
}

// newEnvInit is newEnv with init flags for another provider.
func newEnvInit(t *testing.T, initArgs []string, opts ...string) *env {
	t.Helper()
	d := tempDir(t)
	e := &env{t: t, backing: filepath.Join(d, "backing"), mnt: filepath.Join(d, "mnt"), opts: opts}
	for _, p := range []string{e.backing, e.mnt} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.run(append([]string{"init", e.backing}, initArgs...)...)
	e.mount()
	t.Cleanup(e.cleanup)
	return e
}

func (e *env) mainKeys() []control.MainKeyInfo {
	e.t.Helper()
	var mks []control.MainKeyInfo
	decodeJSON(e.t, e.run("kms", "show", "--json", "--mount", e.mnt), &mks)
	return mks
}

// TestPKCS11: a main key on a SoftHSM token; the private key is sensitive and not
// extractable, the data survives a remount, a wrong PIN mounts nothing.
func TestPKCS11(t *testing.T) {
	softHSM(t)
	e := newEnvInit(t, []string{"--provider", "pkcs11", "--pkcs11-module", softhsmModule,
		"--pkcs11-token", tokenLabel, "--pkcs11-key", "ezfs-main"})
	zone := e.zone("z", "k")
	data := patterned(50000)
	if err := os.WriteFile(filepath.Join(zone, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	mks := e.mainKeys()
	if len(mks) != 1 || mks[0].Provider != "pkcs11" || !mks[0].Current || !strings.Contains(mks[0].KeyRef, "ezfs-main") ||
		(mks[0].OAEPHash != "SHA-1" && mks[0].OAEPHash != "SHA-256") || mks[0].ZoneKeyVersions != 1 {
		t.Errorf("kms show: %+v", mks)
	}
	var st []control.Status
	decodeJSON(t, e.run("status", "--json", "--mount", e.mnt), &st)
	if len(st) != 1 || st[0].Provider != "pkcs11" || !st[0].ProviderOK || len(st[0].Providers) != 1 || !st[0].Providers[0].OK {
		t.Errorf("status: %+v", st)
	}
	e.remount()
	if got, err := os.ReadFile(filepath.Join(zone, "f")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after remount: %v", err)
	}
	// Rotation makes a second key pair on the token; new zone key versions use it.
	e.run("kms", "rotate", "--mount", e.mnt)
	e.run("key", "roll", "--mount", e.mnt, "k")
	if err := os.WriteFile(filepath.Join(zone, "g"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	e.umount()

	checkTokenKeys(t, "ezfs-main", "ezfs-main-v2")

	e.failsEnv([]string{"EZFS_EXTERNAL_KEY_PIN=0000"}, "CKR_PIN_INCORRECT", "mount", e.backing, e.mnt)
	if e.mounted() {
		t.Fatal("mounted with a wrong PIN")
	}
	pinFile := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(pinFile, []byte(tokenPIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.failsEnv([]string{"EZFS_EXTERNAL_KEY_PIN="}, "PIN file", "mount", "--pin-file", filepath.Join(t.TempDir(), "missing"), e.backing, e.mnt)
	out, errOut, err := ezfsEnv([]string{"EZFS_EXTERNAL_KEY_PIN="}, "mount", "--pin-file", pinFile, e.backing, e.mnt)
	if err != nil {
		t.Fatalf("mount with --pin-file: %v %s %s", err, out, errOut)
	}
	for _, n := range []string{"f", "g"} {
		if got, err := os.ReadFile(filepath.Join(zone, n)); err != nil || !bytes.Equal(got, data) {
			t.Errorf("read %s: %v", n, err)
		}
	}
}

// checkTokenKeys opens the token from the test and checks that each labelled private
// key is sensitive, not extractable, and refuses to give out its private exponent.
func checkTokenKeys(t *testing.T, labels ...string) {
	t.Helper()
	ctx := p11.New(softhsmModule)
	if ctx == nil {
		t.Fatal("cannot load SoftHSM")
	}
	defer ctx.Destroy()
	if err := ctx.Initialize(); err != nil {
		t.Fatal(err)
	}
	defer ctx.Finalize()
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	var sh p11.SessionHandle
	found := false
	for _, s := range slots {
		if ti, err := ctx.GetTokenInfo(s); err == nil && strings.TrimRight(ti.Label, " ") == tokenLabel {
			if sh, err = ctx.OpenSession(s, p11.CKF_SERIAL_SESSION); err != nil {
				t.Fatal(err)
			}
			found = true
		}
	}
	if !found {
		t.Fatal("token not found")
	}
	defer ctx.CloseSession(sh)
	if err := ctx.Login(sh, p11.CKU_USER, tokenPIN); err != nil {
		t.Fatal(err)
	}
	for _, label := range labels {
		if err := ctx.FindObjectsInit(sh, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY), p11.NewAttribute(p11.CKA_LABEL, label)}); err != nil {
			t.Fatal(err)
		}
		objs, _, err := ctx.FindObjects(sh, 2)
		ctx.FindObjectsFinal(sh)
		if err != nil || len(objs) != 1 {
			t.Fatalf("private key %q: %d objects, %v", label, len(objs), err)
		}
		attrs, err := ctx.GetAttributeValue(sh, objs[0], []*p11.Attribute{
			p11.NewAttribute(p11.CKA_SENSITIVE, nil), p11.NewAttribute(p11.CKA_EXTRACTABLE, nil)})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(attrs[0].Value, []byte{1}) || !bytes.Equal(attrs[1].Value, []byte{0}) {
			t.Errorf("key %q: CKA_SENSITIVE %v, CKA_EXTRACTABLE %v", label, attrs[0].Value, attrs[1].Value)
		}
		if _, err := ctx.GetAttributeValue(sh, objs[0], []*p11.Attribute{p11.NewAttribute(p11.CKA_PRIVATE_EXPONENT, nil)}); err == nil {
			t.Errorf("key %q gave out its private exponent", label)
		}
	}
}

// TestTamperedZoneKey: a zone key version whose wrapped material was edited, or moved
// from another key, is refused; files under it read as EIO, others still work.
func TestTamperedZoneKey(t *testing.T) {
	e := newEnv(t)
	za := e.zone("a", "ka")
	zb := e.zone("b", "kb")
	zc := e.zone("c", "kc")
	for _, z := range []string{za, zb, zc} {
		if err := os.WriteFile(filepath.Join(z, "f"), []byte("data in "+z), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e.umount()
	s, err := keystore.Open(filepath.Join(e.backing, ".ezfs"))
	if err != nil {
		t.Fatal(err)
	}
	ka, _ := s.ZoneKey("ka")
	kb, _ := s.ZoneKey("kb")
	v1 := keystore.MainRef{Name: keystore.DefaultMain, Version: 1}
	flipped := bytes.Clone(ka.Versions[0].Wrapped)
	flipped[len(flipped)/2] ^= 1
	if err := s.SetZoneKeyWrap("ka", 1, v1, v1, flipped); err != nil {
		t.Fatal(err)
	}
	// kc@1 now holds kb@1's (valid) wrapped key: it unwraps, but is bound to kb@1.
	if err := s.SetZoneKeyWrap("kc", 1, v1, v1, kb.Versions[0].Wrapped); err != nil {
		t.Fatal(err)
	}
	s.Close()
	e.mount()
	for _, z := range []string{za, zc} {
		if _, err := os.ReadFile(filepath.Join(z, "f")); errnoOf(err) != syscall.EIO {
			t.Errorf("file under a tampered zone key %s: %v, want EIO", z, err)
		}
	}
	if got, err := os.ReadFile(filepath.Join(zb, "f")); err != nil || string(got) != "data in "+zb {
		t.Errorf("untouched zone: %v", err)
	}
	log, _ := os.ReadFile(filepath.Join(e.backing, ".ezfs", "ezfs.log"))
	for _, want := range []string{"unwrap ka@1", "invalid ciphertext", "not bound to this key version"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("daemon log does not say %q:\n%s", want, log)
		}
	}
}
