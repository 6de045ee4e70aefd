package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// setIDCase changes a file the way one kind of caller would; the mode and file
// capabilities that remain must be those the backing disk leaves.
type setIDCase struct {
	name   string
	mode   string // octal, set with chmod before the change
	caps   bool   // give the file a capability (setcap) before the change
	who    string // root, nocap (root without CAP_FSETID) or nobody
	script string // run in the file's folder on file f; its output is compared too
}

var setIDCases = []setIDCase{
	{"write", "6777", false, "nocap", "echo x >> f"},
	{"write-root", "6777", false, "root", "echo x >> f"},
	{"write-sgid-no-gx", "2766", false, "nocap", "echo x >> f"},
	{"write-many", "6777", false, "nocap", "echo x >> f; echo y >> f; chmod 6777 f; echo z >> f"},
	// Another open of the same file must neither keep the bits nor fail: the kernel
	// wants every open of a file to agree on passthrough.
	{"write-while-open-for-reading", "6777", false, "nocap", "exec 3<f; echo x >> f"},
	{"read-while-open-for-writing", "6777", false, "nocap", "exec 3>>f; echo x >&3; cat f"},
	{"truncate", "6777", false, "nocap", "truncate -s 1 f"},
	{"truncate-root", "6777", false, "root", "truncate -s 1 f"},
	{"open-trunc", "6777", false, "nocap", ": > f"},
	{"chown", "6777", false, "root", "chown 1:1 f"},
	{"unlinked-while-open", "6777", false, "nocap", "exec 3>>f; rm f; echo x >&3; stat -L -c %a /dev/fd/3"},
	{"caps-read", "0755", true, "root", "cat f"},
	{"caps-write", "0755", true, "root", "echo x >> f"},
	{"caps-truncate", "0755", true, "root", "truncate -s 0 f"},
	{"write-nobody", "6777", false, "nobody", "echo x >> f"},
	{"truncate-nobody", "6777", false, "nobody", "truncate -s 1 f"},
}

// runSetIDCase sets the case up in a fresh folder under dir and returns what is left:
// the script's output, the file's mode, and its capabilities.
func runSetIDCase(t *testing.T, dir string, c setIDCase) string {
	t.Helper()
	d := filepath.Join(dir, c.name)
	if err := os.Mkdir(d, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o777); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(d, "f")
	if err := os.WriteFile(f, []byte("#!/bin/sh\necho data\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	setup := "chmod " + c.mode + " f"
	if c.caps {
		setup += " && setcap cap_net_raw+ep f"
	}
	if out, err := shell(d, "root", setup); err != nil {
		t.Fatalf("%s: %v: %s", setup, err, out)
	}
	out, err := shell(d, c.who, c.script)
	if err != nil {
		t.Fatalf("%s as %s: %v: %s", c.script, c.who, err, out)
	}
	after, _ := shell(d, "root", "stat -c %a f 2>/dev/null; getcap f 2>/dev/null | grep -q cap_net_raw && echo caps")
	return fmt.Sprintf("output %q, then %q", out, after)
}

// shell runs script with sh in dir as who.
func shell(dir, who, script string) (string, error) {
	script = "cd " + dir + " && " + script
	switch who {
	case "nobody":
		return asUser(65534, script)
	case "nocap":
		out, err := exec.Command("setpriv", "--bounding-set", "-fsetid", "--", "sh", "-c", script).CombinedOutput()
		return string(out), err
	}
	out, err := exec.Command("sh", "-c", script).CombinedOutput()
	return string(out), err
}

// TestSetIDBits: writes, truncates, O_TRUNC opens and chowns drop set-user-ID,
// set-group-ID and file capabilities exactly as the backing disk does, in zones and
// outside them, on a private mount (where the daemon drops them, told by the kernel
// through FUSE_HANDLE_KILLPRIV_V2) and on a shared one (where the kernel does).
func TestSetIDBits(t *testing.T) {
	ref := tempDir(t)
	want := map[string]string{}
	for _, c := range setIDCases {
		want[c.name] = runSetIDCase(t, ref, c)
	}
	// The reference must show each rule at work, or the comparison proves nothing.
	for name, frag := range map[string]string{
		"write": `"777`, "write-while-open-for-reading": `"777`, "write-root": `"6777`, "write-sgid-no-gx": `"2766`,
		"chown": `"777`, "caps-read": `"755\ncaps\n"`, "caps-write": `"755\n"`, "unlinked-while-open": `output "777\n"`,
	} {
		if !strings.Contains(want[name], frag) {
			t.Fatalf("backing disk, %s: %s, want it to contain %s", name, want[name], frag)
		}
	}

	private := newEnv(t)
	shared := newEnv(t, "allow_other")
	daemon := newEnv(t, "nopassthrough")
	for _, where := range []struct {
		name  string
		e     *env
		zone  bool
		users bool // other users reach the mount
	}{
		{"private-zone", private, true, false},
		{"private-plain", private, false, false},
		{"nopassthrough-plain", daemon, false, false},
		{"shared-zone", shared, true, true},
		{"shared-plain", shared, false, true},
	} {
		t.Run(where.name, func(t *testing.T) {
			dir := filepath.Join(where.e.mnt, where.name)
			if where.zone {
				dir = where.e.zone(where.name, "k")
			} else if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, 0o777); err != nil {
				t.Fatal(err)
			}
			for _, c := range setIDCases {
				if c.who == "nobody" && !where.users {
					continue
				}
				if got := runSetIDCase(t, dir, c); got != want[c.name] {
					t.Errorf("%s: %s; on the backing disk: %s", c.name, got, want[c.name])
				}
			}
		})
	}
}
