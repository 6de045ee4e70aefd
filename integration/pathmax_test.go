package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// pathMaxDepth directories of pathMaxComp bytes each: the relative path of a name in
// the deepest one is 20*201 bytes of directories plus the name, so names of 75 bytes
// make relative paths of exactly 4095 bytes (PATH_MAX less the NUL).
const pathMaxDepth, pathMaxComp = 20, 200

func pathMaxDirs() []string {
	dirs := make([]string, pathMaxDepth)
	for i := range dirs {
		dirs[i] = fmt.Sprintf("%02d", i) + strings.Repeat("d", pathMaxComp-2)
	}
	return dirs
}

// pathMaxRun builds the tree in root with relative mkdir and chdir steps, then, from
// root, makes each call on names whose relative paths are 4094 to 4097 bytes long,
// and returns one line per call: the call, its path length and its result.
func pathMaxRun(t *testing.T, root string) []string {
	t.Helper()
	h := startHelper(t, 0, 0)
	var lines []string
	do := func(what string, r hreq) hres {
		res := h.do(r)
		data, _, _ := strings.Cut(res.Data, " ino=") // inode numbers differ from the disk's
		lines = append(lines, fmt.Sprintf("%-40s %s %s", what, orOK(res.Err), data))
		return res
	}
	if r := h.do(hreq{Op: "chdir", Path: root}); r.Err != "" {
		t.Fatalf("chdir %s: %s", root, r.Err)
	}
	dirs := pathMaxDirs()
	for i, d := range dirs {
		do(fmt.Sprintf("mkdir level %d", i+1), hreq{Op: "mkdir", Path: d, Mode: 0o755})
		do(fmt.Sprintf("chdir level %d", i+1), hreq{Op: "chdir", Path: d})
	}
	if r := h.do(hreq{Op: "chdir", Path: root}); r.Err != "" {
		t.Fatalf("chdir %s: %s", root, r.Err)
	}
	prefix := strings.Join(dirs, "/") + "/"
	for _, total := range []int{4094, 4095, 4096, 4097} {
		name := func(c string) string { return prefix + c + strings.Repeat("x", total-len(prefix)-1) }
		f, g, hh, p, q, s, d := name("f"), name("g"), name("h"), name("p"), name("q"), name("s"), name("d")
		if len(f) != total {
			t.Fatalf("path of %d bytes, want %d", len(f), total)
		}
		for _, c := range []struct {
			what string
			r    hreq
		}{
			{"create", hreq{Op: "create", Path: f, Mode: 0o644}},
			{"stat", hreq{Op: "stat", Path: f}},
			{"chmod 0600", hreq{Op: "chmod", Path: f, Mode: 0o600}},
			{"chown 65534:65534", hreq{Op: "chown", Path: f, UID: 65534, GID: 65534}},
			{"truncate 100", hreq{Op: "truncate", Path: f, Size: 100}},
			{"stat", hreq{Op: "stat", Path: f}},
			{"link f g", hreq{Op: "link", Path: f, Path2: g}},
			{"rename g h", hreq{Op: "rename", Path: g, Path2: hh}},
			{"stat h", hreq{Op: "stat", Path: hh}},
			{"unlink h", hreq{Op: "unlink", Path: hh}},
			{"mkfifo p", hreq{Op: "mkfifo", Path: p, Mode: 0o644}},
			{"mknod q fifo", hreq{Op: "mknod", Path: q, Mode: syscall.S_IFIFO | 0o640}},
			{"stat q", hreq{Op: "stat", Path: q}},
			{"symlink s", hreq{Op: "symlink", Path: s, Path2: "target"}},
			{"stat s", hreq{Op: "stat", Path: s}},
			{"mkdir d", hreq{Op: "mkdir", Path: d, Mode: 0o755}},
			{"rmdir d", hreq{Op: "rmdir", Path: d}},
			{"unlink f", hreq{Op: "unlink", Path: f}},
			{"unlink p", hreq{Op: "unlink", Path: p}},
			{"unlink q", hreq{Op: "unlink", Path: q}},
			{"unlink s", hreq{Op: "unlink", Path: s}},
		} {
			do(fmt.Sprintf("%d: %s", total, c.what), c.r)
		}
	}
	return lines
}

func orOK(err string) string {
	if err == "" {
		return "ok"
	}
	return err
}

// TestPathMax: names whose path relative to the working directory is 4095 bytes long
// take every call as on the backing disk, in a zone and outside; 4096 bytes and more
// fail with ENAMETOOLONG, as on the disk. The daemon's own path to such a file is
// longer than PATH_MAX, so it must not reach files by absolute paths.
func TestPathMax(t *testing.T) {
	old := syscall.Umask(0o022)
	t.Cleanup(func() { syscall.Umask(old) })
	ref := pathMaxRun(t, t.TempDir())
	// The reference must show both sides of the limit, or the comparison proves nothing.
	for _, l := range ref {
		if strings.HasPrefix(l, "4095: ") && !strings.Contains(l, " ok ") {
			t.Fatalf("on the backing disk: %s", l)
		}
		if strings.HasPrefix(l, "4096: ") && !strings.Contains(l, " ENAMETOOLONG ") {
			t.Fatalf("on the backing disk: %s", l)
		}
	}
	e := newEnv(t)
	zone := e.zone("z", "k")
	plain := filepath.Join(e.mnt, "plain")
	if err := os.Mkdir(plain, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, where := range []struct{ name, dir string }{{"zone", zone}, {"plain", plain}} {
		t.Run(where.name, func(t *testing.T) {
			got := pathMaxRun(t, where.dir)
			bad := 0
			for i := range ref {
				if got[i] != ref[i] {
					if bad < 40 {
						t.Errorf("mount: %s\n         disk:  %s", got[i], ref[i])
					}
					bad++
				}
			}
			if bad > 0 {
				t.Errorf("%d of %d calls differ from the backing disk", bad, len(ref))
			}
		})
	}
}
