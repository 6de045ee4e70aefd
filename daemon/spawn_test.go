package daemon

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ezfs/ezfs/keystore"
)

// TestCleanEnv: the background daemon's environment holds no secret, and the
// variables that name files come absolute (it runs in "/").
func TestCleanEnv(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("EZFS_PASSPHRASE", "secret")
	t.Setenv(keystore.EnvEtcdPasswordFile, "etc/pw")
	t.Setenv(keystore.EnvEtcdCA, "/etc/ezfs/ca.pem")
	t.Setenv(keystore.EnvLogDir, "")
	env := cleanEnv()
	for _, kv := range []string{keystore.EnvEtcdPasswordFile + "=" + filepath.Join(wd, "etc/pw"), keystore.EnvEtcdCA + "=/etc/ezfs/ca.pem", keystore.EnvLogDir + "="} {
		if !slices.Contains(env, kv) {
			t.Errorf("the daemon's environment has no %s", kv)
		}
	}
	for _, kv := range env {
		if kv == "EZFS_PASSPHRASE=secret" {
			t.Error("the daemon's environment holds the passphrase")
		}
	}
}
