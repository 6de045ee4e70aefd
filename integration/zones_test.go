package integration

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestZoneRules: bad zone requests are refused with a one-line error and a non-zero
// exit; moves across zone boundaries copy, and the copy takes the destination's key.
func TestZoneRules(t *testing.T) {
	e := newEnv(t)
	za := e.zone("a", "ka")
	zb := e.zone("b", "kb")

	full := filepath.Join(e.mnt, "full")
	if err := os.MkdirAll(filepath.Join(full, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	nested := filepath.Join(za, "inner")
	if err := os.Mkdir(nested, 0o755); err != nil {
		t.Fatal(err)
	}
	above := filepath.Join(e.mnt, "above")
	if err := os.MkdirAll(filepath.Join(above, "deep"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.run("zone", "create", filepath.Join(above, "deep"), "--key", "ka")
	afile := filepath.Join(e.mnt, "afile")
	if err := os.WriteFile(afile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(e.mnt, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()

	for _, c := range []struct {
		name, path, key, want string
	}{
		{"non-empty directory", full, "ka", "is not empty"},
		{"inside a zone", nested, "ka", "is inside an encryption zone"},
		{"above a zone", above, "ka", "contains an encryption zone"},
		{"existing zone", za, "kb", "is already an encryption zone"},
		{"unknown key", empty, "nosuchkey", `key "nosuchkey" does not exist`},
		{"a file", afile, "ka", "is not a directory"},
		{"outside any mount", outside, "ka", "is not inside an ezfs mount"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e.fails(c.want, "zone", "create", c.path, "--key", c.key)
		})
	}

	// Renames and links across zone boundaries are EXDEV; mv then copies.
	src := filepath.Join(za, "doc.txt")
	data := patterned(10000)
	if err := os.WriteFile(src, data, 0o640); err != nil {
		t.Fatal(err)
	}
	plainFile := filepath.Join(e.mnt, "plain.txt")
	if err := os.WriteFile(plainFile, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ from, to string }{
		{src, filepath.Join(zb, "x")},
		{src, filepath.Join(e.mnt, "x")},
		{plainFile, filepath.Join(zb, "x")},
	} {
		if err := os.Rename(c.from, c.to); errnoOf(err) != syscall.EXDEV {
			t.Errorf("rename %s -> %s: %v, want EXDEV", c.from, c.to, err)
		}
		if err := os.Link(c.from, c.to); errnoOf(err) != syscall.EXDEV {
			t.Errorf("link %s -> %s: %v, want EXDEV", c.from, c.to, err)
		}
	}
	dst := filepath.Join(zb, "doc.txt")
	if out, err := exec.Command("mv", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("mv between zones: %v: %s", err, out)
	}
	if _, err := os.Stat(src); !os.IsNotExist(err) {
		t.Errorf("source still there after mv: %v", err)
	}
	got, err := os.ReadFile(dst)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("moved file: %v", err)
	}
	if fi := e.fileInfo(dst); fi.Key != "kb" || fi.Zone != "/b" || !fi.Encrypted {
		t.Errorf("moved file is not under the destination zone's key: %+v", fi)
	}
	if back, _ := os.ReadFile(e.backingOf(dst)); bytes.Contains(back, pattern[:16]) {
		t.Error("moved file is stored in the clear")
	}
	// A plain file moved into a zone is encrypted there.
	if out, err := exec.Command("mv", plainFile, filepath.Join(zb, "was-plain")).CombinedOutput(); err != nil {
		t.Fatalf("mv into a zone: %v: %s", err, out)
	}
	if fi := e.fileInfo(filepath.Join(zb, "was-plain")); !fi.Encrypted || fi.Key != "kb" {
		t.Errorf("file moved into a zone: %+v", fi)
	}
	// Within a zone, rename is an ordinary rename.
	if err := os.Rename(dst, filepath.Join(zb, "renamed")); err != nil {
		t.Errorf("rename within a zone: %v", err)
	}

	// Zone list shows all three zones with their keys.
	var zs []struct{ Path, Key string }
	decodeJSON(t, e.run("zone", "list", "--mount", e.mnt, "--json"), &zs)
	if len(zs) != 3 || zs[0].Path != "/a" || zs[0].Key != "ka" || zs[1].Path != "/above/deep" || zs[2].Key != "kb" {
		t.Errorf("zone list: %+v", zs)
	}
}

// asUser runs a shell command as uid/gid and returns its error and output.
func asUser(uid uint32, script string) (string, error) {
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}}}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func owner(t *testing.T, p string) (uint32, uint32) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Uid, st.Gid
}

// TestPrivateMount: without allow_other only root reaches the mount; the kernel then
// leaves permission checks to the daemon, which must answer as the backing disk would
// answer root.
func TestPrivateMount(t *testing.T) {
	e := newEnv(t)
	zone := e.zone("private", "k")
	for _, dir := range []string{zone, e.mnt} {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			if err := os.Chmod(dir, 0o777); err != nil {
				t.Fatal(err)
			}
			if out, err := asUser(65534, "ls "+dir); err == nil {
				t.Errorf("another user listed a mount without allow_other: %s", out)
			}
			plain, exe := filepath.Join(dir, "plain"), filepath.Join(dir, "exe")
			if err := os.WriteFile(plain, []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(exe, []byte("#!/bin/sh\necho ran\n"), 0o700); err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				path string
				mode uint32
				want error
			}{
				{plain, unix.R_OK | unix.W_OK, nil},
				{plain, unix.X_OK, syscall.EACCES},
				{exe, unix.X_OK, nil},
				{filepath.Join(dir, "missing"), unix.R_OK, syscall.ENOENT},
			} {
				if err := unix.Access(c.path, c.mode); !errors.Is(err, c.want) && err != c.want {
					t.Errorf("access(%s, %#o) = %v, want %v", filepath.Base(c.path), c.mode, err, c.want)
				}
			}
			if out, err := exec.Command(exe).CombinedOutput(); err != nil || string(out) != "ran\n" {
				t.Errorf("run %s: %v: %q", exe, err, out)
			}
		})
	}
}

// TestSharedMount: with allow_other several users share the mount as they share the
// backing disk: ownership, modes, sticky directories, chown by root.
func TestSharedMount(t *testing.T) {
	const nobody, other = 65534, 65533
	e := newEnv(t, "allow_other")
	zone := e.zone("shared", "k")
	// os.Chmod would drop 0o1000; the sticky bit needs the raw mode.
	if err := syscall.Chmod(zone, 0o1777); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{zone, e.mnt} {
		if dir == e.mnt {
			if err := syscall.Mkdir(filepath.Join(e.mnt, "tmp"), 0o1777); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Chmod(filepath.Join(e.mnt, "tmp"), 0o1777); err != nil {
				t.Fatal(err)
			}
			dir = filepath.Join(e.mnt, "tmp")
		}
		t.Run(filepath.Base(dir), func(t *testing.T) {
			if st, err := os.Stat(e.backingOf(dir)); err != nil || st.Mode()&os.ModeSticky == 0 {
				t.Fatalf("backing %s is not sticky: %v", dir, err)
			}
			f, d := filepath.Join(dir, "nobody.txt"), filepath.Join(dir, "nobodydir")
			if out, err := asUser(nobody, "echo hello > "+f+" && mkdir "+d+" && cat "+f); err != nil || out != "hello\n" {
				t.Fatalf("user %d creating files: %v: %s", nobody, err, out)
			}
			for _, p := range []string{f, d, e.backingOf(f), e.backingOf(d)} {
				if u, g := owner(t, p); u != nobody || g != nobody {
					t.Errorf("%s belongs to %d:%d, want %d:%d", p, u, g, nobody, nobody)
				}
			}
			secret := filepath.Join(dir, "root-only")
			if err := os.WriteFile(secret, []byte("root's"), 0o600); err != nil {
				t.Fatal(err)
			}
			if out, err := asUser(nobody, "cat "+secret); err == nil {
				t.Errorf("user %d read root's 0600 file: %s", nobody, out)
			}
			if out, err := asUser(nobody, "echo x >> "+secret); err == nil {
				t.Errorf("user %d wrote root's 0600 file: %s", nobody, out)
			}
			// Sticky directory: another user may not remove or rename nobody's file.
			if out, err := asUser(other, "rm -f "+f); err == nil {
				t.Errorf("user %d removed user %d's file in a sticky directory: %s", other, nobody, out)
			}
			if out, err := asUser(other, "mv "+f+" "+f+".stolen"); err == nil {
				t.Errorf("user %d renamed user %d's file in a sticky directory: %s", other, nobody, out)
			}
			if _, err := os.Stat(f); err != nil {
				t.Errorf("file gone: %v", err)
			}
			// A user cannot give a file away; root can, and chmod works.
			if out, err := asUser(nobody, "chown 0 "+f); err == nil {
				t.Errorf("user %d chowned a file to root: %s", nobody, out)
			}
			if err := os.Chown(f, 1000, 1001); err != nil {
				t.Fatalf("root chown: %v", err)
			}
			if err := os.Chmod(f, 0o640); err != nil {
				t.Fatal(err)
			}
			if u, g := owner(t, e.backingOf(f)); u != 1000 || g != 1001 {
				t.Errorf("backing owner after chown: %d:%d", u, g)
			}
			if st, _ := os.Stat(e.backingOf(f)); st.Mode().Perm() != 0o640 {
				t.Errorf("backing mode after chmod: %v", st.Mode())
			}
			if out, err := asUser(nobody, "cat "+f); err == nil {
				t.Errorf("user %d still reads a file no longer theirs (0640, 1000:1001): %s", nobody, out)
			}
			if out, err := asUser(nobody, "rm -r "+d); err != nil {
				t.Errorf("user %d cannot remove their own directory: %v: %s", nobody, err, out)
			}
		})
	}
}

// posixACL encodes an access ACL as the kernel's system.posix_acl_access xattr value:
// version 2, then (tag, perm, id) triples. The id matters only for named entries.
func posixACL(entries ...[3]uint32) []byte {
	b := []byte{2, 0, 0, 0}
	for _, e := range entries {
		b = append(b, byte(e[0]), byte(e[0]>>8), byte(e[1]), byte(e[1]>>8),
			byte(e[2]), byte(e[2]>>8), byte(e[2]>>16), byte(e[2]>>24))
	}
	return b
}

// ACL entry tags (linux/posix_acl_xattr.h).
const (
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclMask     = 0x10
	aclOther    = 0x20
)

// TestSharedMountACL: where the kernel checks permissions (allow_other), it honours the
// files' POSIX ACLs as the backing disk does: a named entry that denies is not overruled
// by the other-class bits, one that grants works, an ACL set, changed by chmod or
// removed through the mount takes effect at once, new objects take a directory's
// default ACL in place of the umask, and an ACL set by an owner outside the file's group
// drops set-group-ID.
func TestSharedMountACL(t *testing.T) {
	const nobody = 65534
	e := newEnv(t, "allow_other")
	zone := e.zone("acl", "k")
	plainDir := filepath.Join(e.mnt, "plain")
	if err := os.Mkdir(plainDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(zone, 0o755); err != nil {
		t.Fatal(err)
	}
	deny := posixACL([3]uint32{aclUserObj, 6}, [3]uint32{aclUser, 0, nobody},
		[3]uint32{aclGroupObj, 4}, [3]uint32{aclMask, 4}, [3]uint32{aclOther, 4})
	grant := posixACL([3]uint32{aclUserObj, 6}, [3]uint32{aclUser, 4, nobody},
		[3]uint32{aclGroupObj, 0}, [3]uint32{aclMask, 4}, [3]uint32{aclOther, 0})
	for _, dir := range []string{zone, plainDir} {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			f := filepath.Join(dir, "f")
			if err := os.WriteFile(f, []byte("data\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, step := range []struct {
				name     string
				change   func() error
				readable bool
			}{
				{"no ACL, 0644", func() error { return nil }, true},
				{"named entry denies", func() error { return unix.Setxattr(f, "system.posix_acl_access", deny, 0) }, false},
				{"ACL removed", func() error { return unix.Removexattr(f, "system.posix_acl_access") }, true},
				{"0600, named entry grants", func() error {
					if err := os.Chmod(f, 0o600); err != nil {
						return err
					}
					return unix.Setxattr(f, "system.posix_acl_access", grant, 0)
				}, true},
				{"chmod 0600 clears the mask", func() error { return os.Chmod(f, 0o600) }, false},
			} {
				if err := step.change(); err != nil {
					t.Fatalf("%s: %v", step.name, err)
				}
				_, err := asUser(nobody, "cat "+f)
				if got := err == nil; got != step.readable {
					t.Errorf("%s: user %d can read through the mount: %v, want %v", step.name, nobody, got, step.readable)
				}
				_, err = asUser(nobody, "cat "+e.backingOf(f)+" >/dev/null")
				if got := err == nil; got != step.readable {
					t.Errorf("%s: user %d can read the backing file: %v, want %v", step.name, nobody, got, step.readable)
				}
			}
			// New objects: under a default ACL the ACL, not the umask, limits the mode;
			// elsewhere the umask does. Same as in a twin directory on the disk itself.
			inherit := posixACL([3]uint32{aclUserObj, 7}, [3]uint32{aclUser, 6, nobody},
				[3]uint32{aclGroupObj, 5}, [3]uint32{aclMask, 7}, [3]uint32{aclOther, 5})
			for _, c := range []struct {
				name      string
				acl       []byte
				file, dir string // modes after umask 022
			}{
				{"default ACL", inherit, "664", "775"},
				{"no default ACL", nil, "644", "755"},
			} {
				var modes []string
				for _, parent := range []string{filepath.Join(dir, "new"), filepath.Join(t.TempDir(), "native")} {
					if err := os.Mkdir(parent, 0o755); err != nil {
						t.Fatal(err)
					}
					if c.acl != nil {
						if err := unix.Setxattr(parent, "system.posix_acl_default", c.acl, 0); err != nil {
							t.Fatal(err)
						}
					}
					out, err := exec.Command("/bin/sh", "-c", "cd "+parent+
						" && umask 022 && touch f && mkdir d && mkfifo p && stat -c %a f d p").CombinedOutput()
					if err != nil {
						t.Fatalf("%s: create in %s: %v: %s", c.name, parent, err, out)
					}
					modes = append(modes, string(out))
					if err := os.RemoveAll(parent); err != nil {
						t.Fatal(err)
					}
				}
				want := c.file + "\n" + c.dir + "\n" + c.file + "\n"
				if modes[0] != want || modes[1] != want {
					t.Errorf("%s: modes of new file, directory, fifo: mount %q, disk %q, want %q", c.name, modes[0], modes[1], want)
				}
			}
			// An owner outside the file's group who sets an ACL loses set-group-ID.
			twin := t.TempDir()
			for _, d := range []string{filepath.Dir(twin), twin} {
				if err := os.Chmod(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for _, g := range []string{filepath.Join(dir, "sgid"), filepath.Join(twin, "sgid")} {
				if err := os.WriteFile(g, []byte("x"), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Chown(g, nobody, 0); err != nil {
					t.Fatal(err)
				}
				if err := syscall.Chmod(g, 0o2775); err != nil {
					t.Fatal(err)
				}
				if out, err := asUser(nobody, fmt.Sprintf("setfattr -n system.posix_acl_access -v 0x%x %s", grant, g)); err != nil {
					t.Fatalf("user %d sets an ACL on their file %s: %v: %s", nobody, g, err, out)
				}
				var st syscall.Stat_t
				if err := syscall.Stat(g, &st); err != nil {
					t.Fatal(err)
				}
				if st.Mode&syscall.S_ISGID != 0 {
					t.Errorf("%s keeps set-group-ID (mode %o) after an ACL set by its owner outside its group", g, st.Mode&0o7777)
				}
			}
		})
	}
}

// TestSharedMountNoACLBacking: a shared mount on a backing file system without ACLs
// (ramfs answers EOPNOTSUPP for them, as NFSv4 and vfat do) still lets other users in
// by the mode bits, and applies their umask.
func TestSharedMountNoACLBacking(t *testing.T) {
	const nobody = 65534
	d := tempDir(t)
	backing := filepath.Join(d, "backing")
	if err := os.Mkdir(backing, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("ramfs", backing, "ramfs", 0, "mode=0755"); err != nil {
		t.Fatalf("mount ramfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(backing, unix.MNT_DETACH) }) // after the ezfs unmount
	if _, err := unix.Getxattr(backing, "system.posix_acl_access", nil); !errors.Is(err, unix.EOPNOTSUPP) {
		t.Fatalf("ramfs getxattr of an ACL: %v, want EOPNOTSUPP", err)
	}
	e := newEnvIn(t, d, "allow_other")
	if err := os.Chmod(e.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(e.mnt, "f")
	if err := os.WriteFile(f, []byte("data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := asUser(nobody, "ls "+e.mnt+" && cat "+f); err != nil || out != "f\ndata\n" {
		t.Errorf("user %d lists the mount and reads a 0644 file: %v: %q", nobody, err, out)
	}
	if err := os.Chmod(f, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := asUser(nobody, "cat "+f); err == nil {
		t.Errorf("user %d read a 0600 file of root's: %q", nobody, out)
	}
	if _, err := unix.Getxattr(f, "system.posix_acl_access", nil); !errors.Is(err, unix.ENODATA) {
		t.Errorf("getxattr of the ACL through the mount: %v, want ENODATA (no ACL)", err)
	}
	out, err := exec.Command("/bin/sh", "-c", "cd "+e.mnt+" && umask 027 && touch g && mkdir h && stat -c %a g h").CombinedOutput()
	if err != nil || string(out) != "640\n750\n" {
		t.Errorf("modes of a new file and directory under umask 027: %v: %q, want 640 and 750", err, out)
	}
}
