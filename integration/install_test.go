package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestInstall (issue 16, criterion 1): make install DESTDIR=tmp lays out the binary, the
// mount helper mount(8) runs for fuse.ezfs, the systemd unit, the man page and the bash
// completion; make uninstall removes each.
func TestInstall(t *testing.T) {
	dest := t.TempDir()
	bin := filepath.Join(t.TempDir(), "ezfs")
	make := func(target string) {
		t.Helper()
		cmd := exec.Command("make", "-s", "-C", "..", target, "DESTDIR="+dest, "PREFIX=/usr", "BIN="+bin)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make %s: %v\n%s", target, err, out)
		}
	}
	make("install")
	files := map[string]string{
		"usr/bin/ezfs":                               "",
		"usr/share/man/man8/ezfs.8":                  ".TH ezfs 8",
		"usr/lib/systemd/system/ezfs@.service":       "ExecStart=/usr/bin/ezfs mount --foreground",
		"usr/share/bash-completion/completions/ezfs": "complete -o filenames -F _ezfs ezfs",
	}
	for f, want := range files {
		p := filepath.Join(dest, f)
		st, err := os.Stat(p)
		if err != nil {
			t.Errorf("%s not installed: %v", f, err)
			continue
		}
		b, _ := os.ReadFile(p)
		if want != "" && !strings.Contains(string(b), want) {
			t.Errorf("%s does not hold %q", f, want)
		}
		if f == "usr/bin/ezfs" && st.Mode()&0o111 == 0 {
			t.Errorf("%s is not executable: %v", f, st.Mode())
		}
	}
	if target, err := os.Readlink(filepath.Join(dest, "sbin/mount.fuse.ezfs")); err != nil || target != "/usr/bin/ezfs" {
		t.Errorf("mount helper: %q %v, want a link to /usr/bin/ezfs", target, err)
	}
	man, _ := os.ReadFile(filepath.Join(dest, "usr/share/man/man8/ezfs.8"))
	for _, w := range []string{"EXIT STATUS", "not_found", "reencrypt", "fuse.ezfs"} {
		if !strings.Contains(string(man), w) {
			t.Errorf("man page lacks %q", w)
		}
	}
	if out, err := exec.Command("bash", "-c", "source "+filepath.Join(dest, "usr/share/bash-completion/completions/ezfs")+
		"; COMP_WORDS=(ezfs reencrypt st); COMP_CWORD=2; _ezfs; echo ${COMPREPLY[@]}").CombinedOutput(); err != nil ||
		strings.TrimSpace(string(out)) != "start status" {
		t.Errorf("completion of 'ezfs reencrypt st': %q %v", out, err)
	}
	make("uninstall")
	for f := range files {
		if _, err := os.Lstat(filepath.Join(dest, f)); err == nil {
			t.Errorf("%s left by make uninstall", f)
		}
	}
	if _, err := os.Lstat(filepath.Join(dest, "sbin/mount.fuse.ezfs")); err == nil {
		t.Error("mount helper left by make uninstall")
	}
}
