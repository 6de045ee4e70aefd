package integration

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The hostile user of these tests, and the marks of what only root may see: every file
// of the outside directory holds outSecret, every xattr value there outXattr, and the
// names only it has begin with outOnly. None may ever come back through the mount.
const (
	hostile   = 65534
	outSecret = "OUTSECRET"
	outXattr  = "OUTXATTR"
	outOnly   = "outonly"
)

// makeOut makes out, a root-owned directory of mode 0700 outside the mount and the
// backing dir, with the names a user's directory has (f, s, s/g, empty) and names only
// it has; files are root's, mode 0600, with known contents, an xattr user.x each, and
// all mtimes in 2010.
func makeOut(t *testing.T, out string) {
	t.Helper()
	for _, d := range []string{out, out + "/s", out + "/empty"} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"f", "s/g", outOnly + "-file", "s/" + outOnly + "-sub"} {
		p := filepath.Join(out, f)
		if err := os.WriteFile(p, []byte(outSecret+" "+f+" of "+out+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"f", "s/g", outOnly + "-file", "s/" + outOnly + "-sub", "s", "empty", ""} {
		p = filepath.Join(out, p)
		if err := unix.Lsetxattr(p, "user.x", []byte(outXattr+" "+p), 0); err != nil {
			t.Fatal(err)
		}
	}
	// Deepest first: setting a child's time does not change its parent's.
	ts := []unix.Timespec{unix.NsecToTimespec(1262347200e9), unix.NsecToTimespec(1262347200e9)}
	for _, p := range []string{"f", "s/g", outOnly + "-file", "s/" + outOnly + "-sub", "s", "empty", ""} {
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(out, p), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
	}
}

// snapshot records every entry under dir: type and mode, owner, size, mtime, a hash
// of the contents, the target of a link, and the xattrs. inos collects the inode
// numbers.
func snapshot(t *testing.T, dir string, inos map[uint64]bool) map[string]string {
	t.Helper()
	snap := map[string]string{}
	err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		if inos != nil {
			inos[st.Ino] = true
		}
		s := fmt.Sprintf("mode=%o owner=%d:%d size=%d mtime=%d.%09d", st.Mode, st.Uid, st.Gid, st.Size, st.Mtim.Sec, st.Mtim.Nsec)
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s += fmt.Sprintf(" sha256=%x", sha256.Sum256(b))
		case syscall.S_IFLNK:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			s += " link=" + l
		}
		buf := make([]byte, 1<<16)
		n, err := unix.Llistxattr(p, buf)
		if err != nil {
			return err
		}
		names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
		sort.Strings(names)
		for _, a := range names {
			if a == "" {
				continue
			}
			v := make([]byte, 1<<16)
			m, err := unix.Lgetxattr(p, a, v)
			if err != nil {
				return err
			}
			s += fmt.Sprintf(" %s=%q", a, v[:m])
		}
		rel, _ := filepath.Rel(dir, p)
		snap[rel] = s
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// checkOut compares out with its snapshot before and reports every difference;
// out is made again as it was if anything changed.
func checkOut(t *testing.T, out string, before map[string]string) {
	t.Helper()
	after := snapshot(t, out, nil)
	var diffs []string
	for k, v := range before {
		switch w, ok := after[k]; {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("OUT/%s is gone (was %s)", k, v))
		case w != v:
			diffs = append(diffs, fmt.Sprintf("OUT/%s changed:\n\t\twas %s\n\t\tnow %s", k, v, w))
		}
	}
	for k, v := range after {
		if _, ok := before[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("OUT/%s appeared: %s", k, v))
		}
	}
	if len(diffs) == 0 {
		return
	}
	sort.Strings(diffs)
	t.Errorf("root-owned %s outside the backing dir changed:\n\t%s", out, strings.Join(diffs, "\n\t"))
	if err := os.RemoveAll(out); err != nil {
		t.Fatal(err)
	}
	makeOut(t, out)
}

// leaks reports what of the outside directory an answer from the mount shows: its
// contents, xattr values or names, or one of its inode numbers in a stat.
func leaks(data string, inos map[uint64]bool) string {
	for _, mark := range []string{outSecret, outXattr, outOnly} {
		if i := strings.Index(data, mark); i >= 0 {
			return fmt.Sprintf("%q", data[max(0, i-20):min(len(data), i+60)])
		}
	}
	for _, f := range strings.Fields(data) {
		var ino uint64
		if _, err := fmt.Sscanf(f, "ino=%d", &ino); err == nil && inos[ino] {
			return fmt.Sprintf("the stat of a file outside (%s)", data)
		}
	}
	return ""
}

// userTree makes, through the mount and as the hostile user h, in home: directories d
// and e, each with a file f (with an xattr user.x), a subdirectory s with a file g, an
// empty subdirectory, a fifo p and a symlink l.
func userTree(t *testing.T, h *helper, home string) {
	t.Helper()
	for _, d := range []string{"d", "e"} {
		d = filepath.Join(home, d)
		for _, r := range []hreq{
			{Op: "mkdir", Path: d, Mode: 0o755},
			{Op: "mkdir", Path: d + "/s", Mode: 0o755},
			{Op: "mkdir", Path: d + "/empty", Mode: 0o755},
			{Op: "create", Path: d + "/f", Mode: 0o644},
			{Op: "write", Path: d + "/f", Data: "the user's f\n"},
			{Op: "setxattr", Path: d + "/f", Attr: "user.x", Data: "the user's"},
			{Op: "create", Path: d + "/s/g", Mode: 0o644},
			{Op: "write", Path: d + "/s/g", Data: "the user's g\n"},
			{Op: "mkfifo", Path: d + "/p", Mode: 0o644},
			{Op: "symlink", Path: d + "/l", Path2: "f"},
		} {
			if res := h.do(r); res.Err != "" {
				t.Fatalf("as uid %d through the mount: %s: %s", hostile, r, res.Err)
			}
		}
	}
}

// swapBacking is the hostile user's work on the backing dir itself: its directory d
// becomes a symlink to out, and e's f, s and empty become symlinks to out's.
func swapBacking(t *testing.T, h *helper, home, out string) {
	t.Helper()
	for _, r := range []hreq{
		{Op: "rename", Path: home + "/d", Path2: home + "/d2"},
		{Op: "symlink", Path: home + "/d", Path2: out},
		{Op: "rename", Path: home + "/e/f", Path2: home + "/e/f.orig"},
		{Op: "symlink", Path: home + "/e/f", Path2: out + "/f"},
		{Op: "rename", Path: home + "/e/s", Path2: home + "/e/s.orig"},
		{Op: "symlink", Path: home + "/e/s", Path2: out + "/s"},
		{Op: "rename", Path: home + "/e/empty", Path2: home + "/e/empty.orig"},
		{Op: "symlink", Path: home + "/e/empty", Path2: out + "/empty"},
	} {
		if res := h.do(r); res.Err != "" {
			t.Fatalf("as uid %d in the backing dir: %s: %s", hostile, r, res.Err)
		}
	}
}

// hostileOps are the calls on the names a directory had, relative to at (a kept
// descriptor of it) or, if at is "", under dir; none of them follows a symlink itself.
func hostileOps(at, dir string) []hreq {
	p := func(name string) string {
		if at != "" {
			return name
		}
		return filepath.Join(dir, name)
	}
	var ops []hreq
	add := func(r hreq) {
		r.At, r.Path, r.Safe = at, p(r.Path), true
		if r.Op == "link" || r.Op == "rename" {
			r.Path2 = p(r.Path2)
		}
		ops = append(ops, r)
	}
	for _, r := range []hreq{
		// Listings come after the changes: a READDIRPLUS refreshes the kernel's
		// entries, and the changes are first tried on the entries it cached.
		{Op: "stat", Path: "."}, {Op: "stat", Path: "f"}, {Op: "stat", Path: "s"}, {Op: "stat", Path: "s/g"},
		{Op: "read", Path: "f"}, {Op: "read", Path: "s/g"},
		{Op: "getxattr", Path: "f", Attr: "user.x"}, {Op: "getxattr", Path: "s", Attr: "user.x"},
		{Op: "listxattr", Path: "f"},
		{Op: "chmod", Path: "f", Mode: 0o666}, {Op: "chmod", Path: "s", Mode: 0o777},
		{Op: "chmod", Path: "s/g", Mode: 0o666}, {Op: "chmod", Path: ".", Mode: 0o777},
		{Op: "chown", Path: "f", UID: hostile, GID: hostile}, {Op: "chown", Path: "s", UID: hostile, GID: hostile},
		{Op: "chown", Path: "s/g", UID: hostile, GID: hostile},
		{Op: "truncate", Path: "f", Size: 0}, {Op: "truncate", Path: "s/g", Size: 1},
		{Op: "ftruncate", Path: "f", Size: 2},
		{Op: "utimens", Path: "f"}, {Op: "utimens", Path: "s"}, {Op: "utimens", Path: "s/g"},
		{Op: "setxattr", Path: "f", Attr: "user.x", Data: "pwned"}, {Op: "setxattr", Path: "s", Attr: "user.x", Data: "pwned"},
		{Op: "setxattr", Path: "s/g", Attr: "user.y", Data: "pwned"},
		{Op: "removexattr", Path: "s/g", Attr: "user.x"}, {Op: "removexattr", Path: ".", Attr: "user.x"},
		{Op: "write", Path: "f", Data: "pwned"}, {Op: "write", Path: "s/g", Data: "pwned"},
		{Op: "mkdir", Path: "newdir", Mode: 0o777}, {Op: "mkdir", Path: "s/newdir", Mode: 0o777},
		{Op: "mknod", Path: "newnod", Mode: syscall.S_IFIFO | 0o666}, {Op: "mkfifo", Path: "s/newfifo", Mode: 0o666},
		{Op: "create", Path: "newfile", Mode: 0o666},
		{Op: "symlink", Path: "newlink", Path2: "/etc/passwd"}, {Op: "symlink", Path: "s/newlink", Path2: "g"},
		{Op: "link", Path: "f", Path2: "newhard"}, {Op: "link", Path: "s/g", Path2: "s/newhard"},
		{Op: "readdir", Path: "."}, {Op: "readdir", Path: "s"}, {Op: "readdir", Path: "empty"},
		{Op: "rename", Path: "f", Path2: "f-renamed"}, {Op: "rename", Path: "s/g", Path2: "g-moved"},
		{Op: "rename", Path: "empty", Path2: "empty-renamed"},
		{Op: "unlink", Path: "f"}, {Op: "unlink", Path: "f-renamed"}, {Op: "unlink", Path: "s/g"},
		{Op: "unlink", Path: "g-moved"}, {Op: "unlink", Path: "s/" + outOnly + "-sub"},
		{Op: "rmdir", Path: "empty"}, {Op: "rmdir", Path: "empty-renamed"}, {Op: "rmdir", Path: "s"},
		{Op: "readdir", Path: "."},
	} {
		add(r)
	}
	return ops
}

// hostileRound is one attack: a fresh user tree in home and a fresh out, the swap in
// the backing dir, then the calls through the mount by caller on the names the tree
// had, by path or relative to descriptors kept from before the swap, at once (the
// kernel still caching the old entries) or after the cache timed out.
func hostileRound(t *testing.T, e *env, user, caller *helper, home, out string, byFD, wait bool) {
	t.Helper()
	if err := os.Mkdir(home, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, hostile, hostile); err != nil {
		t.Fatal(err)
	}
	userTree(t, user, home)
	makeOut(t, out)
	inos := map[uint64]bool{}
	before := snapshot(t, out, inos)

	var ops []hreq
	for _, d := range []string{"d", "e"} {
		dir := filepath.Join(home, d)
		if byFD {
			for _, k := range []struct{ name, path string }{{d, dir}, {d + "s", dir + "/s"}} {
				if res := caller.do(hreq{Op: "opendir", Name: k.name, Path: k.path}); res.Err != "" {
					t.Fatalf("opendir %s: %s", k.path, res.Err)
				}
			}
			ops = append(ops, hostileOps(d, "")...)
			ops = append(ops, hostileOps(d+"s", "")...)
		} else {
			ops = append(ops, hostileOps("", dir)...)
		}
	}
	// The kernel caches what it just looked up; the swap comes right after.
	for _, d := range []string{"d", "e"} {
		for _, n := range []string{"", "f", "s", "s/g", "empty"} {
			caller.do(hreq{Op: "stat", Path: filepath.Join(home, d, n)})
		}
	}
	swapBacking(t, user, e.backingOf(home), out)
	if wait {
		time.Sleep(1100 * time.Millisecond) // past the entry and attribute timeouts
	}
	var done []string
	for _, r := range ops {
		res := caller.do(r)
		name := strings.ReplaceAll(r.String(), home+"/", "")
		if l := leaks(res.Data, inos); l != "" {
			t.Errorf("%s through the mount returned what is outside the backing dir: %s", name, l)
		}
		done = append(done, name+": "+orOK(res.Err))
	}
	checkOut(t, out, before)
	if t.Failed() {
		t.Logf("the calls through the mount: %s", strings.Join(done, "; "))
	}
	for _, k := range []string{"d", "ds", "e", "es"} {
		caller.do(hreq{Op: "close", Name: k})
	}
}

// TestHostileBacking: a user who can write the backing dir of a shared mount swaps
// its directories and files there for symlinks to a root-owned directory outside;
// then every call through the mount on the names it had, by it or by root, leaves
// that directory as it was and shows nothing of it. Calls are made at once (the kernel
// still caching entries and attributes from before the swap) and after the cache timed
// out, by path and through directory descriptors opened before the swap.
func TestHostileBacking(t *testing.T) {
	e, places := hostilePlaces(t)
	outs := t.TempDir()
	for _, where := range places {
		t.Run(where.name, func(t *testing.T) {
			user := startHelper(t, hostile, hostile)
			root := startHelper(t, 0, 0)
			i := 0
			for _, c := range []struct {
				name   string
				caller *helper
			}{{"user", user}, {"root", root}} {
				for _, how := range []string{"path", "fd"} {
					for _, when := range []string{"cached", "after-timeout"} {
						t.Run(c.name+"-"+how+"-"+when, func(t *testing.T) {
							i++
							home := filepath.Join(where.dir, fmt.Sprintf("home%d", i))
							out := filepath.Join(outs, fmt.Sprintf("%s-OUT%d", where.name, i))
							hostileRound(t, e, user, c.caller, home, out, how == "fd", when == "after-timeout")
						})
					}
				}
			}
		})
	}
}

// hostilePlaces mounts a shared mount with a zone and a plain folder for the hostile
// tests.
func hostilePlaces(t *testing.T) (*env, []struct{ name, dir string }) {
	e := newEnv(t, "allow_other")
	zone := e.zone("z", "k")
	plain := filepath.Join(e.mnt, "plain")
	if err := os.Mkdir(plain, 0o755); err != nil {
		t.Fatal(err)
	}
	return e, []struct{ name, dir string }{{"zone", zone}, {"plain", plain}}
}

// TestHostileBackingRace: the same user swaps its directory and files for symlinks to
// the root-owned directory outside through the mount only, in a loop, while it and
// root change the names in loops of their own. Nothing outside changes or shows.
func TestHostileBackingRace(t *testing.T) {
	_, places := hostilePlaces(t)
	outs := t.TempDir()
	for _, where := range places {
		t.Run(where.name, func(t *testing.T) {
			swapper := startHelper(t, hostile, hostile)
			user := startHelper(t, hostile, hostile)
			root := startHelper(t, 0, 0)
			home := filepath.Join(where.dir, "home")
			if err := os.Mkdir(home, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(home, hostile, hostile); err != nil {
				t.Fatal(err)
			}
			userTree(t, user, home)
			out := filepath.Join(outs, where.name+"-OUT")
			makeOut(t, out)
			inos := map[uint64]bool{}
			before := snapshot(t, out, inos)

			var swaps []hreq
			for _, s := range []struct{ name, target string }{{"d", out}, {"d/s", out + "/s"}, {"e/f", out + "/f"}, {"e/s", out + "/s"}} {
				p := filepath.Join(home, s.name)
				swaps = append(swaps,
					hreq{Op: "rename", Path: p, Path2: p + ".away"},
					hreq{Op: "symlink", Path: p, Path2: s.target},
					hreq{Op: "unlink", Path: p},
					hreq{Op: "rename", Path: p + ".away", Path2: p})
			}
			var ops []hreq
			for _, n := range []string{"d/f", "d/s", "d/s/g", "e/f", "e/s", "e/s/g"} {
				p := filepath.Join(home, n)
				for _, r := range []hreq{
					{Op: "chmod", Mode: 0o666}, {Op: "chmod", Mode: 0o644}, {Op: "truncate", Size: 0},
					{Op: "setxattr", Attr: "user.x", Data: "pwned"}, {Op: "chown", UID: hostile, GID: hostile},
					{Op: "utimens"}, {Op: "stat"}, {Op: "read"}, {Op: "getxattr", Attr: "user.x"}, {Op: "readdir"},
				} {
					r.Path, r.Safe = p, true
					ops = append(ops, r)
				}
			}
			const loopMs = 3000
			var wg sync.WaitGroup
			answers := make([]hres, 3)
			errs := make([]error, 3)
			for i, l := range []struct {
				h   *helper
				ops []hreq
			}{{swapper, swaps}, {user, ops}, {root, ops}} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					answers[i], errs[i] = l.h.try(hreq{Op: "loop", Ms: loopMs, Ops: l.ops})
				}()
			}
			wg.Wait()
			for i, who := range []string{"swapper", "user", "root"} {
				if errs[i] != nil {
					t.Fatalf("%s: %v", who, errs[i])
				}
				calls, data, _ := strings.Cut(answers[i].Data, "\n")
				t.Logf("%s: %s in %d ms", who, calls, loopMs)
				for _, d := range strings.Split(data, "\n") {
					if l := leaks(d, inos); l != "" {
						t.Errorf("%s: a call through the mount returned what is outside the backing dir: %s", who, l)
					}
				}
			}
			checkOut(t, out, before)
		})
	}
}

// TestSwappedNameXattr: a file's name swapped on the backing disk for another file
// that has the same attribute, read through the kernel's cached entry of the first: the
// daemon reads the attribute by name first (most such reads find none, ls -l's two
// per file) and must then find the name not the node's: ENOENT, never the other
// file's value. A name whose file has no such attribute answers ENODATA, as before.
func TestSwappedNameXattr(t *testing.T) {
	e := newEnv(t)
	for _, dir := range []string{e.zone("z", "k"), filepath.Join(e.mnt, "plain")} {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			mine, other := filepath.Join(dir, "mine"), filepath.Join(dir, "other")
			for p, v := range map[string]string{mine: "mine", other: "OTHER"} {
				if err := os.WriteFile(p, nil, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := unix.Setxattr(p, "user.x", []byte(v), 0); err != nil {
					t.Fatal(err)
				}
			}
			buf := make([]byte, 64)
			if n, err := unix.Lgetxattr(mine, "user.x", buf); err != nil || string(buf[:n]) != "mine" {
				t.Fatalf("before the swap: %q, %v", buf[:n], err)
			}
			// On the disk, behind the mount's back: "other" takes the name "mine".
			b := e.backingOf(mine)
			if err := os.Rename(b, b+".away"); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(e.backingOf(other), b); err != nil {
				t.Fatal(err)
			}
			// The kernel still has "mine" as the first file's node (entry timeout 1 s).
			n, err := unix.Lgetxattr(mine, "user.x", buf)
			if err == nil && strings.Contains(string(buf[:n]), "OTHER") {
				t.Fatalf("the swapped-in file's attribute came through: %q", buf[:n])
			}
			if errnoOf(err) != syscall.ENOENT {
				t.Fatalf("getxattr of a swapped name: %q, %v; want ENOENT", buf[:max(n, 0)], err)
			}
			if _, err := unix.Lgetxattr(mine, "user.none", buf); errnoOf(err) != syscall.ENODATA && errnoOf(err) != syscall.ENOENT {
				t.Fatalf("getxattr of an absent attribute of a swapped name: %v", err)
			}
		})
	}
}
