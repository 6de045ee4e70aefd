package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ezfs/ezfs/control"
	"github.com/ezfs/ezfs/keystore"
	"github.com/ezfs/ezfs/keystore/etcdtest"
)

// followWithin is how soon a daemon must follow a change made through another
// daemon on the same etcd keystore (issue 17: "within a second").
const followWithin = time.Second

// etcdPair mounts one backing directory twice with -o sharedstorage, as two hosts
// on shared storage with one etcd keystore (prefix on cluster c): daemons a and b,
// their logs in one EZFS_LOG_DIR of the test, which does not exist before (the
// first command that logs makes it).
func etcdPair(t *testing.T, c *etcdtest.Cluster, prefix string) (a, b *env) {
	t.Helper()
	t.Setenv(keystore.EnvLogDir, filepath.Join(t.TempDir(), "log", "ezfs"))
	d := tempDir(t)
	loc := c.Location(prefix)
	a = &env{t: t, backing: filepath.Join(d, "backing"), mnt: filepath.Join(d, "a"), opts: []string{"sharedstorage"}, keystore: loc}
	a.start()
	b = &env{t: t, backing: a.backing, mnt: filepath.Join(d, "b"), opts: a.opts, keystore: loc}
	if err := os.Mkdir(b.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	b.mount()
	t.Cleanup(b.cleanup)
	return a, b
}

// pairSub runs f as subtest name of a's and b's test: the checks of both fail the
// subtest meanwhile.
func pairSub(a, b *env, name string, f func(t *testing.T)) bool {
	parent := b.t
	defer func() { b.t = parent }()
	return a.sub(name, func(t *testing.T) {
		b.t = t
		f(t)
	})
}

// within polls cond until it holds, for at most d; it returns how long that took,
// and fails the test (with what cond said last) if it never did.
func within(t *testing.T, d time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > d {
			t.Errorf("%s: not within %v: %v", what, d, err)
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// hasZone is nil when e's daemon serves a zone at path p (in the mount, "/z").
func hasZone(e *env, p string) error {
	out, errOut, err := ezfs("zone", "list", "--json", "--mount", e.mnt)
	if err != nil {
		return fmt.Errorf("%v: %s", err, errOut)
	}
	var zs []control.ZoneInfo
	if err := json.Unmarshal([]byte(out), &zs); err != nil {
		return err
	}
	for _, z := range zs {
		if z.Path == p && z.Damaged == "" {
			return nil
		}
	}
	return fmt.Errorf("zones %+v", zs)
}

// TestEtcdTwoHosts (issue 17, criterion 1): two daemons on one backing directory and
// one etcd keystore follow each other's changes within a second: files written
// through either read through the other; a roll through a gives b's next files the
// new version; a zone made through a is a zone through b; a main key rotated through
// a wraps the versions b rolls; a key disabled through a is refused through b, open
// files included, and its unwrapped versions leave b's memory; enabled, it serves.
func TestEtcdTwoHosts(t *testing.T) {
	c := etcdtest.Start(t, 1)
	a, b := etcdPair(t, c, "ezfs-it/two")
	if st := b.status(); st.Keystore != c.Location("ezfs-it/two") {
		t.Errorf("b's status shows keystore %q", st.Keystore)
	}
	zone := a.zone("z", "k")
	pairSub(a, b, "written", func(t *testing.T) {
		took := within(t, followWithin, "a's zone through b", func() error { return hasZone(b, "/z") })
		t.Logf("b served a's zone after %v", took)
		plain := filepath.Join(a.mnt, "plain")
		if err := os.Mkdir(plain, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, dir := range []string{zone, plain} {
			for i, w := range []*env{a, b} {
				p := filepath.Join(dir, "w-"+filepath.Base(w.mnt))
				data := patterned(100_000 + i)
				if err := os.WriteFile(on(a, w, p), data, 0o644); err != nil {
					t.Fatal(err)
				}
				checkContents(t, on(a, []*env{b, a}[i], p), data)
			}
		}
		if fi := b.fileInfo(on(a, b, filepath.Join(zone, "w-b"))); !fi.Encrypted || fi.Key != "k" {
			t.Errorf("a file written through b in a's zone: %+v", fi)
		}
	})
	pairSub(a, b, "roll", func(t *testing.T) { etcdRollFollowed(t, a, b, zone) })
	pairSub(a, b, "zone", func(t *testing.T) { etcdZoneFollowed(t, a, b) })
	pairSub(a, b, "mainkey", func(t *testing.T) {
		// A roll wraps under the current main key version as the keystore has it:
		// b's roll right after a's kms rotate is under main v2, and a unwraps it.
		a.run("kms", "rotate", "--mount", a.mnt)
		cur := b.describe("k").Current
		b.run("key", "roll", "k", "--mount", b.mnt)
		vs := b.describe("k").Versions
		if last := vs[len(vs)-1]; last.Version != cur+1 || last.MainVersion != 2 {
			t.Errorf("b's roll after a's kms rotate: %+v, want version %d under main v2", last, cur+1)
		}
		p := filepath.Join(on(a, b, zone), "under-main-2")
		writeFile(t, p, "main v2")
		checkContents(t, filepath.Join(zone, "under-main-2"), []byte("main v2"))
		if fi := a.fileInfo(filepath.Join(zone, "under-main-2")); fi.KeyVersion != cur+1 {
			t.Errorf("file created through b after its roll: %+v, want version %d", fi, cur+1)
		}
	})
	pairSub(a, b, "disable", func(t *testing.T) { etcdDisableFollowed(t, a, b) })
	pairSub(a, b, "fsck", func(t *testing.T) {
		// fsck checks the backing directory against the etcd keystore, hiding nothing.
		a.umount()
		b.umount()
		var rep struct {
			Zones    []struct{ Path string } `json:"zones"`
			Files    int64                   `json:"files"`
			Problems []any                   `json:"problems"`
		}
		decodeJSON(t, a.run("fsck", a.backing, "--keystore", a.keystore, "--json"), &rep)
		if len(rep.Zones) != 3 || rep.Files == 0 || len(rep.Problems) != 0 {
			t.Errorf("fsck with the etcd keystore: %+v", rep)
		}
	})
}

// etcdRollFollowed: after a roll through a, b's new files are on the new version
// within a second, and none after that is on an older one.
func etcdRollFollowed(t *testing.T, a, b *env, zone string) {
	before := a.describe("k").Current
	a.run("key", "roll", "k", "--mount", a.mnt)
	n := 0
	newFile := func() uint32 {
		n++
		p := filepath.Join(on(a, b, zone), fmt.Sprintf("after-roll-%d", n))
		writeFile(t, p, p)
		return b.fileInfo(p).KeyVersion
	}
	took := within(t, followWithin, "b's new files on a's new version", func() error {
		if v := newFile(); v != before+1 {
			return fmt.Errorf("on version %d, want %d", v, before+1)
		}
		return nil
	})
	t.Logf("b's first file on the new version after %v (%d files)", took, n)
	for range 3 {
		if v := newFile(); v != before+1 {
			t.Errorf("a later file through b is on version %d, want %d", v, before+1)
		}
	}
	for i := 1; i <= n; i++ {
		p := filepath.Join(zone, fmt.Sprintf("after-roll-%d", i))
		checkContents(t, p, []byte(on(a, b, p)))
	}
}

// etcdZoneFollowed: a zone made through a is served as a zone through b within a
// second, while b looks its directory up all along (b sees the marker before its
// keystore has the zone: the nodes it made meanwhile must serve the zone then).
func etcdZoneFollowed(t *testing.T, a, b *env) {
	dir := filepath.Join(a.mnt, "z2")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				_, _ = os.ReadDir(on(a, b, dir))
			}
		}
	}()
	a.run("key", "create", "k2", "--mount", a.mnt)
	a.run("zone", "create", dir, "--key", "k2")
	took := within(t, followWithin, "a's new zone through b", func() error { return hasZone(b, "/z2") })
	close(stop)
	wg.Wait()
	t.Logf("b served a's new zone after %v", took)
	p := filepath.Join(on(a, b, dir), "f")
	writeFile(t, p, "in z2 through b")
	if fi := b.fileInfo(p); !fi.Encrypted || fi.Key != "k2" || fi.Zone != "/z2" {
		t.Errorf("a file made through b in the zone made through a: %+v", fi)
	}
	checkContents(t, filepath.Join(dir, "f"), []byte("in z2 through b"))
	// The backing file is ciphertext.
	if raw, err := os.ReadFile(filepath.Join(a.backing, "z2", "f")); err != nil || bytes.Contains(raw, []byte("in z2")) {
		t.Errorf("backing file of b's file in a's new zone: %q %v", raw, err)
	}
}

// etcdDisableFollowed: a key disabled through a is refused through b within a second
// (reads through a file b holds open with its pages cached, new opens, creates), b
// zeroes its unwrapped versions; enabled again through a, b serves within a second.
func etcdDisableFollowed(t *testing.T, a, b *env) {
	zone := a.zone("zd", "kd")
	within(t, followWithin, "a's zone through b", func() error { return hasZone(b, "/zd") })
	data := patterned(20_000)
	writeFile(t, filepath.Join(zone, "f"), string(data))
	bz := on(a, b, zone)
	held, err := os.Open(filepath.Join(bz, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	buf := make([]byte, len(data))
	if n, err := held.ReadAt(buf, 0); n != len(data) || !bytes.Equal(buf, data) {
		t.Fatalf("read through b: %d %v", n, err)
	}
	cached := b.status().CachedKeys
	refused := func() error {
		if _, err := held.ReadAt(buf, 0); errnoOf(err) != syscall.EACCES {
			return fmt.Errorf("read through the file b holds open: %v", err)
		}
		if _, err := os.ReadFile(filepath.Join(bz, "f")); errnoOf(err) != syscall.EACCES {
			return fmt.Errorf("new open through b: %v", err)
		}
		if err := os.WriteFile(filepath.Join(bz, "new"), nil, 0o644); errnoOf(err) != syscall.EACCES {
			return fmt.Errorf("create through b: %v", err)
		}
		return nil
	}
	a.run("key", "disable", "kd", "--mount", a.mnt)
	took := within(t, followWithin, "a's disable refused through b", refused)
	t.Logf("b refused the key disabled through a after %v", took)
	if n := b.status().CachedKeys; n != cached-1 {
		t.Errorf("b caches %d unwrapped zone key versions after the disable, want %d (kd@1 zeroed)", n, cached-1)
	}
	a.run("key", "enable", "kd", "--mount", a.mnt)
	within(t, followWithin, "a's enable served through b", func() error {
		if n, err := held.ReadAt(buf, 0); n != len(data) || !bytes.Equal(buf, data) {
			return fmt.Errorf("read through the file b holds open: %d %v", n, err)
		}
		_, err := os.ReadFile(filepath.Join(bz, "f"))
		return err
	})
}

// TestEtcdConcurrentRolls (issue 17, criterion 2): 20 rolls of one key through each
// of two daemons at once make versions 1..41, none lost or duplicated, as both
// daemons describe them; the files both create meanwhile all read through both.
func TestEtcdConcurrentRolls(t *testing.T) {
	c := etcdtest.Start(t, 1)
	a, b := etcdPair(t, c, "ezfs-it/rolls")
	zone := a.zone("z", "k")
	within(t, followWithin, "a's zone through b", func() error { return hasZone(b, "/z") })
	var rolls, writers sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 100)
	files := make([][]string, 2) // per daemon, the files made through it (their contents: their path there)
	for i, e := range []*env{a, b} {
		rolls.Add(1)
		go func() {
			defer rolls.Done()
			for range 20 {
				if out, errOut, err := ezfs("key", "roll", "k", "--mount", e.mnt); err != nil {
					errs <- fmt.Errorf("roll through %s: %v %s %s", e.mnt, err, out, errOut)
				}
			}
		}()
		writers.Add(1)
		go func() { // files, until the rolls end
			defer writers.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				p := filepath.Join(on(a, e, zone), fmt.Sprintf("%s-%d", filepath.Base(e.mnt), n))
				if err := os.WriteFile(p, []byte(p), 0o644); err != nil {
					errs <- err
					return
				}
				files[i] = append(files[i], p)
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	rolls.Wait()
	close(stop)
	writers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	want := make([]uint32, 41)
	for i := range want {
		want[i] = uint32(i + 1)
	}
	for _, e := range []*env{a, b} {
		var got []uint32
		for _, v := range e.describe("k").Versions {
			got = append(got, v.Version)
		}
		if !slices.Equal(got, want) {
			t.Errorf("versions through %s: %v, want 1..41", e.mnt, got)
		}
		var ks []control.KeyInfo
		decodeJSON(t, e.run("key", "list", "--json", "--mount", e.mnt), &ks)
		if len(ks) != 1 || ks[0].Current != 41 {
			t.Errorf("key list through %s: %+v", e.mnt, ks)
		}
	}
	for i, made := range files {
		for _, p := range made {
			checkContents(t, p, []byte(p))
			checkContents(t, on([]*env{a, b}[i], []*env{b, a}[i], p), []byte(p))
		}
	}
	if len(files[0]) == 0 || len(files[1]) == 0 {
		t.Errorf("files made during the rolls: %d through a, %d through b", len(files[0]), len(files[1]))
	}
}

// TestEtcdQuorum (issue 17, criterion 4): with one member of three down everything
// works; with two down admin changes fail with "keystore unavailable" (exit 5),
// files whose keys are cached read, write and are created, and a create that needs a
// zone key version not unwrapped yet fails with EIO and one log line; with the
// members back, rolls and creates work again without a remount.
func TestEtcdQuorum(t *testing.T) {
	c := etcdtest.Start(t, 3)
	a, b := etcdPair(t, c, "ezfs-it/quorum")
	zone := a.zone("z", "k")
	cold := a.zone("cold", "kc") // b never unwraps kc
	writeFile(t, filepath.Join(cold, "f"), "kc@1 is unwrapped through a only")
	within(t, followWithin, "a's zones through b", func() error { return hasZone(b, "/cold") })
	bz := on(a, b, zone)

	c.Stop(0)
	c.WaitHealthy()
	pairSub(a, b, "one member down", func(t *testing.T) {
		for _, e := range []*env{a, b} {
			e.run("key", "roll", "k", "--mount", e.mnt)
			p := filepath.Join(on(a, e, zone), "one-down-"+filepath.Base(e.mnt))
			writeFile(t, p, p)
		}
		for _, w := range []*env{a, b} {
			p := filepath.Join(zone, "one-down-"+filepath.Base(w.mnt))
			for _, r := range []*env{a, b} {
				checkContents(t, on(a, r, p), []byte(on(a, w, p)))
			}
		}
	})
	// The last change before the outage drops every daemon's caches of the
	// keystore: b fills them again for its zones' keys right away.
	a.run("key", "create", "unrelated", "--mount", a.mnt)
	time.Sleep(200 * time.Millisecond)

	c.Stop(1)
	pairSub(a, b, "two members down", func(t *testing.T) {
		start := time.Now()
		failsCode(t, nil, control.CodeUnavailable, "keystore unavailable", "key", "roll", "k", "--mount", a.mnt)
		failsCode(t, nil, control.CodeUnavailable, "keystore unavailable", "key", "roll", "k", "--mount", b.mnt)
		t.Logf("two refused rolls took %v", time.Since(start))
		checkContents(t, filepath.Join(bz, "one-down-a"), []byte(filepath.Join(zone, "one-down-a")))
		appendBytes(t, filepath.Join(bz, "one-down-b"), []byte("+more"))
		checkContents(t, filepath.Join(bz, "one-down-b"), []byte(filepath.Join(bz, "one-down-b")+"+more"))
		writeFile(t, filepath.Join(bz, "created-while-down"), "k's newest version is cached")
		checkContents(t, filepath.Join(bz, "created-while-down"), []byte("k's newest version is cached"))

		p := filepath.Join(on(a, b, cold), "needs-kc")
		err := os.WriteFile(p, []byte("x"), 0o644)
		if errnoOf(err) != syscall.EIO {
			t.Errorf("create needing kc@1 through b with etcd down: %v, want EIO", err)
		}
		var lines []string
		for _, l := range strings.Split(b.daemonLog(), "\n") {
			if strings.Contains(l, "key kc@1: ") {
				lines = append(lines, l)
			}
		}
		if len(lines) != 1 || !strings.Contains(lines[0], "EIO on "+filepath.Join(b.backing, "cold")) || !strings.Contains(lines[0], "keystore unavailable") {
			t.Errorf("log lines about the refused create: %q, want one EIO line that says the keystore is unavailable", lines)
		}
		checkContents(t, filepath.Join(cold, "f"), []byte("kc@1 is unwrapped through a only"))
	})

	c.Restart(0)
	c.Restart(1)
	c.WaitHealthy()
	pairSub(a, b, "members back", func(t *testing.T) {
		var before uint32
		within(t, 15*time.Second, "a roll through b once etcd is back", func() error {
			out, errOut, err := ezfs("key", "roll", "k", "--mount", b.mnt)
			if err != nil {
				return fmt.Errorf("%v %s %s", err, out, errOut)
			}
			before = b.describe("k").Current
			return nil
		})
		p := filepath.Join(on(a, b, cold), "needs-kc")
		writeFile(t, p, "kc@1 unwrapped through b now")
		checkContents(t, filepath.Join(cold, "needs-kc"), []byte("kc@1 unwrapped through b now"))
		// The watch followed again: a's roll reaches b's new files.
		a.run("key", "roll", "k", "--mount", a.mnt)
		n := 0
		within(t, followWithin, "b's new files on a's roll after the outage", func() error {
			n++
			q := filepath.Join(bz, fmt.Sprintf("after-%d", n))
			writeFile(t, q, "after")
			if v := b.fileInfo(q).KeyVersion; v != before+1 {
				return fmt.Errorf("on version %d, want %d", v, before+1)
			}
			return nil
		})
	})
}
