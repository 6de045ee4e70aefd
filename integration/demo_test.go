package integration

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/ezfs/ezfs/control"
)

// TestDemo runs the demo script (what `make demo` runs) and checks that it tells the
// whole story and leaves nothing mounted.
func TestDemo(t *testing.T) {
	before, err := control.Mounts()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("../scripts/demo.sh", ezfsBin).CombinedOutput()
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out)
	}
	for _, want := range []string{
		"initialised", "mounted", "zone", "created with key finance", "not found (ciphertext)",
		"user.ezfs.edek=0x", "finance@1", "finance@2", "main key default v1 (system)", "identical after remount", "demo complete",
		"state:                   Completed", "finance@3", "files re-encrypted:",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	after, err := control.Mounts()
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("demo left mounts behind: before %v, after %v", before, after)
	}
	if t.Failed() {
		t.Logf("demo output:\n%s", out)
	}
}
