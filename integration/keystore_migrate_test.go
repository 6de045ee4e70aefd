package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ezfs/ezfs/control"
	"github.com/ezfs/ezfs/keystore/etcdtest"
)

// TestKeystoreMigrate: `keystore migrate` copies a mount's keystore into etcd and from
// there into a new folder, which then mounts and reads the zone's files; it refuses a
// mounted keystore, a target with records, and says when etcd does not answer. The
// etcd keystore's offline backup restores into another prefix (`init --from-backup`).
func TestKeystoreMigrate(t *testing.T) {
	c := etcdtest.Start(t, 1)
	audit := []string{"EZFS_LOG_DIR=" + t.TempDir()}
	e := newEnv(t)
	zone := e.zone("z", "k")
	if err := os.WriteFile(filepath.Join(zone, "f"), []byte("through etcd and back"), 0o644); err != nil {
		t.Fatal(err)
	}
	loc := c.Location("ezfs-it/migrate")
	failsCode(t, audit, control.CodeBusy, "in use", "keystore", "migrate", e.backing, "--to", loc)
	e.umount()

	out, errOut, err := ezfsEnv(audit, "keystore", "migrate", e.backing, "--to", loc)
	if err != nil || !strings.Contains(out, "each read back and identical") {
		t.Fatalf("migrate to etcd: %v %q %q", err, out, errOut)
	}
	failsCode(t, audit, control.CodeBusy, "only fills an empty keystore", "keystore", "migrate", e.backing, "--to", loc)
	back := filepath.Join(tempDir(t), "ks")
	if out, errOut, err = ezfsEnv(audit, "keystore", "migrate", "--keystore", loc, "--to", back); err != nil {
		t.Fatalf("migrate from etcd: %v %q %q", err, out, errOut)
	}
	failsCode(t, audit, control.CodeUsage, "one of them", "keystore", "migrate", e.backing, "--keystore", loc, "--to", back+"2")
	failsCode(t, audit, control.CodeUsage, "credentials", "keystore", "migrate", e.backing, "--to", "etcd://u:p@127.0.0.1:1/x")
	start := time.Now()
	failsCode(t, audit, control.CodeUnavailable, "keystore unavailable", "keystore", "migrate", e.backing, "--to", "etcd://127.0.0.1:1/x")
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("migrate to an etcd that does not answer took %v", took)
	}

	// An etcd keystore's offline backup restores into another prefix.
	file := filepath.Join(tempDir(t), "etcd.backup")
	if out, errOut, err = ezfsEnv(audit, "keystore", "backup", "--keystore", loc, file); err != nil {
		t.Fatalf("backup of the etcd keystore: %v %q %q", err, out, errOut)
	}
	restored := c.Location("ezfs-it/restored")
	if out, errOut, err = ezfsEnv(audit, "init", e.backing, "--keystore", restored, "--from-backup", file); err != nil || !strings.Contains(out, "restored") {
		t.Fatalf("init --from-backup into etcd: %v %q %q", err, out, errOut)
	}
	failsCode(t, audit, control.CodeBusy, "already has a keystore", "init", e.backing, "--keystore", restored, "--from-backup", file)

	e.keystore = back
	e.mount()
	if got, err := os.ReadFile(filepath.Join(zone, "f")); err != nil || string(got) != "through etcd and back" {
		t.Errorf("file through the migrated keystore: %q %v", got, err)
	}
}
