package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// diskCase is something a user does in an empty folder, as the user, that the backing
// disk must refuse with the same error through a shared mount as directly.
type diskCase struct{ name, script string }

// loopExt4 makes an ext4 image with mkfs options mkfs, loop-mounts it with mount
// options opts at DIR/backing and returns DIR, ready for newEnvIn. It returns "" if
// the kernel refuses to mount it, with the kernel's reason.
func loopExt4(t *testing.T, mkfs, opts string) (string, string) {
	t.Helper()
	d := tempDir(t)
	img, backing := filepath.Join(d, "disk.img"), filepath.Join(d, "backing")
	if err := os.Mkdir(backing, 0o755); err != nil {
		t.Fatal(err)
	}
	// 256-byte inodes hold the EDEK xattr, so a zone file costs no extra block.
	mk := "truncate -s 32M " + img + " && mkfs.ext4 -q -F -b 4096 -I 256 " + mkfs + " " + img
	if out, err := exec.Command("sh", "-c", mk).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", mk, err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop,"+opts, img, backing).CombinedOutput(); err != nil {
		dmesg, _ := exec.Command("sh", "-c", "dmesg | tail -n 3").CombinedOutput()
		return "", fmt.Sprintf("mount -o loop,%s: %v: %s; kernel log: %s", opts, err, out, dmesg)
	}
	t.Cleanup(func() { // after the ezfs unmount, registered later
		if err := unix.Unmount(backing, 0); err != nil {
			t.Logf("unmount %s: %v; detaching", backing, err)
			_ = unix.Unmount(backing, unix.MNT_DETACH)
		}
	})
	return d, ""
}

// sameAsDisk runs each case as user 65534 in a folder on the disk directly (the
// reference, where each must fail with want) and in a plain folder and a zone of a
// shared mount of it; each run starts with nothing of the user's on the disk.
func sameAsDisk(t *testing.T, d string, want string, cases []diskCase, exact map[string]string) {
	t.Helper()
	const nobody = 65534
	e := newEnvIn(t, d, "allow_other")
	plainDir := filepath.Join(e.mnt, "plain")
	if err := os.Mkdir(plainDir, 0o777); err != nil {
		t.Fatal(err)
	}
	zone := e.zone("zone", "k")
	ref := filepath.Join(e.backing, "ref") // on the disk, not through the mount
	if err := os.Mkdir(ref, 0o777); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{plainDir, zone, ref} {
		if err := os.Chmod(p, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	run := func(dir, script string) string {
		t.Helper()
		out, _ := asUser(nobody, "cd "+dir+" && "+script)
		if rm, err := asUser(nobody, "rm -rf "+dir+"/*"); err != nil {
			t.Fatalf("clean %s: %v: %s", dir, err, rm)
		}
		return out
	}
	onDisk := map[string]string{}
	for _, c := range cases {
		got := run(ref, c.script)
		if !strings.Contains(got, want) || !strings.Contains(got, exact[c.name]) {
			t.Fatalf("on the disk, %s as user %d: %q, want %q and %q", c.name, nobody, got, want, exact[c.name])
		}
		onDisk[c.name] = got
	}
	for _, where := range []struct{ name, dir string }{{"plain", plainDir}, {"zone", zone}} {
		t.Run(where.name, func(t *testing.T) {
			for _, c := range cases {
				got := run(where.dir, c.script)
				if !strings.Contains(got, want) || !strings.Contains(got, exact[c.name]) {
					t.Errorf("%s as user %d: %q, want %q and %q as on the disk: %q", c.name, nobody, got, want, exact[c.name], onDisk[c.name])
				}
			}
		})
	}
}

// TestQuotaSharedMount: on a shared mount a user's writes and creates count against
// the backing disk's user quota as on the disk itself: past the block hard limit a
// write fails with EDQUOT, in a zone (written by the daemon) and outside (written by
// the kernel's passthrough), and so does fallocate and a create past the inode hard
// limit. The backing dir is a loop-mounted ext4 with user quota; the same user on the
// disk directly is the reference.
func TestQuotaSharedMount(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "setquota", "fallocate"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing (scripts/deps.sh installs it): %v", tool, err)
		}
	}
	d, why := loopExt4(t, "-O quota -E quotatype=usrquota", "usrquota")
	if d == "" {
		// ext4 quota needs CONFIG_QUOTA and CONFIG_QFMT_V2.
		t.Skipf("the kernel cannot mount ext4 with user quota: %s", why)
	}
	// 1 MiB of blocks, 20 inodes for user 65534.
	if out, err := exec.Command("setquota", "-u", "65534", "0", "1024", "0", "20", filepath.Join(d, "backing")).CombinedOutput(); err != nil {
		t.Fatalf("setquota: %v: %s", err, out)
	}
	sameAsDisk(t, d, "Disk quota exceeded", []diskCase{
		// 4 MiB in 64 KiB writes, past the 1 MiB limit.
		{"write", "dd if=/dev/zero of=big bs=64k count=64 2>&1; echo exit $?"},
		{"fallocate", ": > big && fallocate -n -l 4M big 2>&1; echo exit $?"},
		{"inodes", "i=0; while [ $i -lt 40 ]; do : > f$i 2>&1 || break; i=$((i+1)); done; echo made $i files"},
	}, map[string]string{"inodes": "made 20 files"})
}

// TestQuotaReservedBlocks: the blocks ext4 reserves for root (mkfs -m) are not a
// user's through a shared mount either: a user's write or fallocate past the space
// left to users fails with ENOSPC, in a zone and outside, as on the disk, while root
// still writes into the reserved blocks through the mount.
func TestQuotaReservedBlocks(t *testing.T) {
	d, why := loopExt4(t, "-m 50", "rw")
	if d == "" {
		t.Fatal(why)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(filepath.Join(d, "backing"), &st); err != nil {
		t.Fatal(err)
	}
	// Halfway into the reserved blocks: past what users may have, within what root may.
	mib := (int64(st.Bavail) + int64(st.Bfree-st.Bavail)/2) * st.Bsize >> 20
	sameAsDisk(t, d, "No space left on device", []diskCase{
		{"write", fmt.Sprintf("dd if=/dev/zero of=big bs=1M count=%d 2>&1; echo exit $?", mib)},
		{"fallocate", fmt.Sprintf(": > big && fallocate -n -l %dM big 2>&1; echo exit $?", mib)},
	}, nil)
	for _, dir := range []string{"plain", "zone"} {
		p := filepath.Join(d, "mnt", dir, "root")
		if out, err := exec.Command("dd", "if=/dev/zero", "of="+p, "bs=1M", fmt.Sprint("count=", mib)).CombinedOutput(); err != nil {
			t.Errorf("root writing %d MiB into the reserved blocks through the mount: %v: %s", mib, err, out)
		}
		os.Remove(p)
	}
}
