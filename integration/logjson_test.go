package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestLogJSON (issue 16, criterion 6): with --log-format json every line the daemon
// logs is a JSON object with time, level, msg, mountpoint and pid, and an EIO record
// carries errno, path, zone, key and key_version (docs/DESIGN.md).
func TestLogJSON(t *testing.T) {
	e := newEnv(t)
	zone := e.zone("z", "k")
	f := filepath.Join(zone, "f")
	if err := os.WriteFile(f, patterned(64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	e.umount()
	sock, ch := notifySocket(t, func() bool { return true })
	cmd := exec.Command(ezfsBin, "mount", "--foreground", "--log-format", "json", e.backing, e.mnt)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	waitNotice(t, ch, "READY=1")
	bf := e.backingOf(f)
	raw, err := os.ReadFile(bf)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)/2] ^= 1
	if err := os.WriteFile(bf, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	uncached(t, f)
	if _, err := os.ReadFile(f); err == nil {
		t.Fatal("a flipped block read without error")
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("daemon: %v\n%s", err, stderr.String())
	}
	var sawServing, sawEIO, sawMounted bool
	sc := bufio.NewScanner(&stderr)
	n := 0
	for sc.Scan() {
		n++
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Errorf("not JSON: %q", sc.Text())
			continue
		}
		for _, k := range []string{"time", "level", "msg", "mountpoint", "pid"} {
			if _, ok := rec[k]; !ok {
				t.Errorf("line without %s: %q", k, sc.Text())
			}
		}
		if rec["mountpoint"] != e.mnt || rec["pid"] != float64(cmd.Process.Pid) {
			t.Errorf("mountpoint or pid wrong: %q", sc.Text())
		}
		msg, _ := rec["msg"].(string)
		sawServing = sawServing || strings.HasPrefix(msg, "serving ")
		sawMounted = sawMounted || strings.HasPrefix(msg, "mounted ")
		if rec["errno"] == "EIO" {
			sawEIO = true
			if p, _ := rec["path"].(string); !strings.HasSuffix(p, "z/f") || rec["level"] != "ERROR" {
				t.Errorf("EIO record: %q", sc.Text())
			}
			// The data path's own fields: which zone, under which key version.
			if z, _ := rec["zone"].(string); len(z) != 32 || rec["key"] != "k" || rec["key_version"] != float64(1) {
				t.Errorf("EIO record without zone, key and key_version: %q", sc.Text())
			}
		}
	}
	if n == 0 || !sawServing || !sawEIO || !sawMounted {
		t.Errorf("%d lines; serving %v, mounted %v, EIO %v:\n%s", n, sawServing, sawMounted, sawEIO, stderr.String())
	}
}
