package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAuditMainKeys: the audit log names the main key (and its version, for unwraps)
// on every unwrap group and on every admin action about keys or zones: init, key
// create (also a refused one), roll and set-main, every kms command, zone create,
// reencrypt start. Only mount, unmount and a job's progress lines name none.
func TestAuditMainKeys(t *testing.T) {
	e := newEnv(t)
	e.run("kms", "create", "tenant", "--mount", e.mnt, "--provider", "system", "--passphrase-file", writeSecret(t, "pass", "tenant passphrase"))
	e.run("key", "create", "kt", "--main-key", "tenant", "--mount", e.mnt)
	e.run("key", "create", "kd", "--mount", e.mnt)
	e.fails("nosuch", "key", "create", "kx", "--main-key", "nosuch", "--mount", e.mnt)
	zt := e.zone("zt", "kt")
	e.zone("zd", "kd")
	writeFile(t, filepath.Join(zt, "f"), "tenant data")
	writeFile(t, filepath.Join(e.mnt, "zd", "f"), "default data")
	e.run("key", "roll", "kt", "--mount", e.mnt)
	e.run("reencrypt", "start", "--wait", zt)
	e.run("key", "set-main", "kd", "tenant", "--mount", e.mnt)
	e.run("key", "set-main", "kd", "default", "--mount", e.mnt)
	e.run("kms", "rotate", "tenant", "--mount", e.mnt)
	e.run("kms", "rewrap", "tenant", "--mount", e.mnt)
	e.run("kms", "retire", "tenant", "1", "--mount", e.mnt)
	e.remount()
	for _, z := range []string{"zt", "zd"} {
		if _, err := os.ReadFile(filepath.Join(e.mnt, z, "f")); err != nil {
			t.Fatal(err)
		}
	}
	e.umount() // flushes the unwrap groups

	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(readFile(t, filepath.Join(e.ksDir(), "audit.log"))), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		op, _ := rec["op"].(string)
		main, _ := rec["main_key"].(string)
		if rec["type"] == "provider" {
			op = "unwrap " + main
			if v, _ := rec["main_version"].(float64); v < 1 {
				t.Errorf("an unwrap group without its main key version: %s", line)
			}
		}
		seen[op] = true
		if op == "key.create" && rec["result"] == "error" {
			seen["refused key.create"] = main == "nosuch"
		}
		switch op {
		case "mount", "unmount", "reencrypt.end":
			continue
		}
		if main == "" {
			t.Errorf("an audit line without its main key: %s", line)
		}
	}
	for _, want := range []string{"init", "kms.create", "key.create", "zone.create", "key.roll", "reencrypt.start", "key.set-main",
		"kms.rotate", "kms.rewrap", "kms.retire", "unwrap default", "unwrap tenant", "refused key.create"} {
		if !seen[want] {
			t.Errorf("the audit log has no %q line: %v", want, seen)
		}
	}
}
