package integration

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ezfs/ezfs/control"
	"github.com/ezfs/ezfs/crypto"
	"golang.org/x/sys/unix"
)

// edekOf reads a backing file's EDEK record and its key version.
func edekOf(t *testing.T, backing string) ([]byte, uint32) {
	t.Helper()
	buf := make([]byte, 512)
	n, err := unix.Lgetxattr(backing, "user.ezfs.edek", buf)
	if err != nil {
		t.Fatalf("EDEK of %s: %v", backing, err)
	}
	e, err := crypto.ParseEDEK(buf[:n])
	if err != nil {
		t.Fatalf("EDEK of %s: %v", backing, err)
	}
	return bytes.Clone(buf[:n]), e.KeyVersion
}

// zoneFiles lists the regular files below a zone's backing dir, relative to it.
func zoneFiles(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (e *env) job(zone string) control.JobStatus {
	e.t.Helper()
	var jobs []control.JobStatus
	decodeJSON(e.t, e.run("reencrypt", "status", "--json", "--failures", zone), &jobs)
	if len(jobs) != 1 {
		e.t.Fatalf("status of %s: %d jobs", zone, len(jobs))
	}
	return jobs[0]
}

func (e *env) waitJob(zone string) control.JobStatus {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		j := e.job(zone)
		if j.State != "Submitted" && j.State != "Processing" {
			return j
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.t.Fatalf("job on %s did not end", zone)
	return control.JobStatus{}
}

func (e *env) daemonPID() int {
	e.t.Helper()
	var st []control.Status
	decodeJSON(e.t, e.run("status", "--json", "--mount", e.mnt), &st)
	if len(st) != 1 || st[0].PID == 0 {
		e.t.Fatalf("no daemon for %s: %+v", e.mnt, st)
	}
	return st[0].PID
}

func (e *env) kill() {
	e.t.Helper()
	e.killPID(e.daemonPID())
}

// killPID kills the daemon pid with SIGKILL and waits for it to be gone.
func (e *env) killPID(pid int) {
	e.t.Helper()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i < 200 && running(pid); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	// The next mount clears the dead one once a stat of the mount point says ENOTCONN,
	// which the kernel answers from its attribute cache (1 s) until then.
	for i := 0; i < 300; i++ {
		var st syscall.Stat_t
		if err := syscall.Stat(e.mnt, &st); errors.Is(err, syscall.ENOTCONN) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// running reports whether process pid exists and is not a zombie: the daemon's parent
// is init, which can take a second to reap it.
func running(pid int) bool {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, after, _ := strings.Cut(string(st), ") ")
	return !strings.HasPrefix(after, "Z")
}

// fill writes n files in nested directories of dir, returning their contents' hashes
// by path relative to dir.
func fill(t *testing.T, dir string, n int) map[string][32]byte {
	t.Helper()
	sums := map[string][32]byte{}
	for i := 0; i < n; i++ {
		rel := fmt.Sprintf("d%02d/e%d/f%05d", i%37, i%5, i)
		data := []byte(fmt.Sprintf("file %d\n", i))
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		sums[rel] = sha256.Sum256(data)
	}
	return sums
}

// checkZone reads every file through the mount and checks its backing EDEK version.
func (e *env) checkZone(zone string, sums map[string][32]byte, minVersion uint32) {
	e.t.Helper()
	for rel, sum := range sums {
		data, err := os.ReadFile(filepath.Join(zone, rel))
		if err != nil {
			e.t.Errorf("read %s: %v", rel, err)
			continue
		}
		if sha256.Sum256(data) != sum {
			e.t.Errorf("%s: contents changed", rel)
		}
		if _, v := edekOf(e.t, e.backingOf(filepath.Join(zone, rel))); v < minVersion {
			e.t.Errorf("%s: EDEK on version %d, want at least %d", rel, v, minVersion)
		}
	}
}

// TestReencryptZone: 20,000 files (nested, large, empty, hard-linked) are all re-wrapped
// to the target, every EDEK changes, no content changes.
func TestReencryptZone(t *testing.T) {
	e := newEnv(t)
	zone := e.zone("big", "k")
	const n = 20000
	sums := fill(t, zone, n-13)
	r := rand.New(rand.NewSource(3))
	for i := 0; i < 3; i++ { // a few large files
		data := make([]byte, 4<<20+i)
		r.Read(data)
		rel := fmt.Sprintf("large%d", i)
		if err := os.WriteFile(filepath.Join(zone, rel), data, 0o644); err != nil {
			t.Fatal(err)
		}
		sums[rel] = sha256.Sum256(data)
	}
	for i := 0; i < 10; i++ { // a few empty ones
		rel := fmt.Sprintf("empty%d", i)
		if err := os.WriteFile(filepath.Join(zone, rel), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		sums[rel] = sha256.Sum256(nil)
	}
	const links = 50
	for i := 0; i < links; i++ { // extra names of existing files
		src := fmt.Sprintf("d%02d/e%d/f%05d", i%37, i%5, i)
		dst := fmt.Sprintf("links/l%d", i)
		if err := os.MkdirAll(filepath.Join(zone, "links"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(filepath.Join(zone, src), filepath.Join(zone, dst)); err != nil {
			t.Fatal(err)
		}
	}
	before := map[string][]byte{}
	for _, rel := range zoneFiles(t, e.backingOf(zone)) {
		before[rel], _ = edekOf(t, filepath.Join(e.backingOf(zone), rel))
	}
	if len(before) != n+links {
		t.Fatalf("%d names in the zone, want %d", len(before), n+links)
	}
	e.run("key", "roll", "--mount", e.mnt, "k")
	out := e.run("reencrypt", "start", "--wait", zone)
	if !strings.Contains(out, "Completed") {
		t.Errorf("--wait output:\n%s", out)
	}
	j := e.job(zone)
	if j.State != "Completed" || j.Target != 2 || j.Files != n || j.ExtraLinks != links || j.Reencrypted != n || j.Failures != 0 || j.Percent != 100 {
		t.Errorf("job: %+v", j)
	}
	for rel, old := range before {
		now, v := edekOf(t, filepath.Join(e.backingOf(zone), rel))
		if v != 2 || bytes.Equal(now, old) {
			t.Errorf("%s: EDEK on version %d, changed %v", rel, v, !bytes.Equal(now, old))
		}
	}
	e.checkZone(zone, sums, 2)
	// key describe counts the files per version from the job.
	var ki control.KeyInfo
	decodeJSON(t, e.run("key", "describe", "--json", "--mount", e.mnt, "k"), &ki)
	if len(ki.Versions) != 2 || ki.Versions[0].Files == nil || *ki.Versions[0].Files != 0 || *ki.Versions[1].Files != n {
		t.Errorf("key describe file counts: %+v", ki.Versions)
	}
}

// TestReencryptCrash: SIGKILL the daemon three times during a slowed-down job; after
// each mount the job resumes from its checkpoint and in the end every file is done.
func TestReencryptCrash(t *testing.T) {
	e := newEnv(t)
	zone := e.zone("z", "k")
	sums := fill(t, zone, 3000)
	e.run("key", "roll", "--mount", e.mnt, "k")
	e.run("reencrypt", "start", "--rate", "400", zone)
	for i, wait := range []time.Duration{2500 * time.Millisecond, 3500 * time.Millisecond, 2200 * time.Millisecond} {
		time.Sleep(wait)
		before := e.job(zone)
		e.kill()
		e.mount()
		after := e.job(zone)
		t.Logf("kill %d at %q (%d re-encrypted): now %s", i+1, before.Checkpoint, before.Reencrypted, after.State)
		if after.State != "Processing" && after.State != "Completed" {
			t.Fatalf("after kill %d the job is %s", i+1, after.State)
		}
	}
	// Each mount resumed from the checkpoint saved before the kill, never further back.
	log, err := os.ReadFile(filepath.Join(e.backing, ".ezfs", "ezfs.log"))
	if err != nil {
		t.Fatal(err)
	}
	type resume struct {
		pass       int
		checkpoint string
	}
	var resumed []resume
	for _, line := range strings.Split(string(log), "\n") {
		var r resume
		if _, rest, ok := strings.Cut(line, "resuming at pass "); ok {
			pass, cp, _ := strings.Cut(rest, " after ")
			r.pass, _ = strconv.Atoi(pass)
			r.checkpoint = strings.Trim(cp, `"`)
			resumed = append(resumed, r)
		}
	}
	if len(resumed) != 3 {
		t.Fatalf("%d resumes logged, want 3:\n%s", len(resumed), log)
	}
	walkOrder := func(p string) string { return strings.ReplaceAll(p, "/", "\x00") }
	for i := 1; i < len(resumed); i++ {
		a, b := resumed[i-1], resumed[i]
		if b.pass < a.pass || (b.pass == a.pass && walkOrder(b.checkpoint) < walkOrder(a.checkpoint)) {
			t.Errorf("resume %d started at %+v, before the previous resume's %+v", i+1, b, a)
		}
	}
	if resumed[2] == (resume{}) {
		t.Errorf("no checkpoint was saved in three runs: %+v", resumed)
	}
	j := e.waitJob(zone)
	if j.State != "Completed" || j.Failures != 0 {
		t.Fatalf("job after three crashes: %+v", j)
	}
	e.checkZone(zone, sums, 2)
}

// TestReencryptConcurrent: appends, creates, renames (also behind the walk), deletes
// and a key roll while the job runs; nothing is lost and every file ends on the target.
func TestReencryptConcurrent(t *testing.T) {
	e := newEnv(t)
	zone := e.zone("z", "k")
	sums := fill(t, zone, 3000)
	e.run("key", "roll", "--mount", e.mnt, "k")
	e.run("reencrypt", "start", "--rate", "1500", zone)

	var mu sync.Mutex // guards sums
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	worker := func(f func(i int) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := f(i); err != nil {
					errs <- err
					return
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	appended := make([]bytes.Buffer, 4)
	for a := range appended {
		worker(func(i int) error {
			rel := fmt.Sprintf("d%02d/e%d/f%05d", a, a%5, a)
			f, err := os.OpenFile(filepath.Join(zone, rel), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			line := fmt.Sprintf("appended %d\n", i)
			if _, err := f.WriteString(line); err != nil {
				return err
			}
			appended[a].WriteString(line)
			return nil
		})
	}
	worker(func(i int) error { // new files
		rel := fmt.Sprintf("new/n%05d", i)
		data := []byte("new " + rel)
		if err := os.MkdirAll(filepath.Join(zone, "new"), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(zone, rel), data, 0o644); err != nil {
			return err
		}
		mu.Lock()
		sums[rel] = sha256.Sum256(data)
		mu.Unlock()
		return nil
	})
	worker(func(i int) error { // renames from the end of the walk to its start
		src := fmt.Sprintf("d%02d/e%d/f%05d", 36-i%10, (36-i%10)%5, 36-i%10+37*(i/10+1))
		dst := fmt.Sprintf("a-moved/m%05d", i)
		if err := os.MkdirAll(filepath.Join(zone, "a-moved"), 0o755); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		sum, ok := sums[src]
		if !ok {
			return nil
		}
		if err := os.Rename(filepath.Join(zone, src), filepath.Join(zone, dst)); err != nil {
			return err
		}
		delete(sums, src)
		sums[dst] = sum
		return nil
	})
	worker(func(i int) error { // deletes
		rel := fmt.Sprintf("d%02d/e%d/f%05d", 20, 0, 20+37*5*(i+1))
		mu.Lock()
		defer mu.Unlock()
		if _, ok := sums[rel]; !ok {
			return nil
		}
		delete(sums, rel)
		return os.Remove(filepath.Join(zone, rel))
	})
	time.Sleep(700 * time.Millisecond)
	e.run("key", "roll", "--mount", e.mnt, "k") // version 3 during the job: new files use it
	j := e.waitJob(zone)
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if j.State != "Completed" || j.Target != 2 {
		t.Fatalf("job: %+v", j)
	}
	t.Logf("job: %d files, %d re-encrypted, %d sweeps", j.Files, j.Reencrypted, j.Pass)
	for a := range appended {
		rel := fmt.Sprintf("d%02d/e%d/f%05d", a, a%5, a)
		want := append([]byte(fmt.Sprintf("file %d\n", a)), appended[a].Bytes()...)
		got, err := os.ReadFile(filepath.Join(zone, rel))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s lost appends: %v", rel, err)
		}
		delete(sums, rel)
	}
	e.checkZone(zone, sums, 2)
	// Nothing in the zone is left below the target.
	for _, rel := range zoneFiles(t, e.backingOf(zone)) {
		if _, v := edekOf(t, filepath.Join(e.backingOf(zone), rel)); v < 2 {
			t.Errorf("%s left on version %d", rel, v)
		}
	}
}

// TestReencryptCancel: cancel stops the job, keeps what was done, --wait reports it;
// a second start on a running zone is refused; a new start finishes the rest.
func TestReencryptCancel(t *testing.T) {
	e := newEnv(t)
	zone := e.zone("z", "k")
	sums := fill(t, zone, 2000)
	e.run("key", "roll", "--mount", e.mnt, "k")
	waiter := exec.Command(ezfsBin, "reencrypt", "start", "--wait", "--rate", "400", zone)
	var wout bytes.Buffer
	waiter.Stdout, waiter.Stderr = &wout, &wout
	if err := waiter.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	e.fails("already running", "reencrypt", "start", zone)
	start := time.Now()
	e.run("reencrypt", "cancel", zone)
	t.Logf("cancel took %v", time.Since(start))
	werr := waiter.Wait()
	if werr == nil || !strings.Contains(wout.String(), "canceled") {
		t.Errorf("--wait on a canceled job: %v\n%s", werr, wout.String())
	}
	j := e.job(zone)
	if j.State != "Canceled" || !j.Canceled || j.Completed == nil || j.Reencrypted == 0 || j.Reencrypted >= 2000 {
		t.Fatalf("after cancel: %+v", j)
	}
	on := map[uint32]int{}
	for rel := range sums {
		_, v := edekOf(t, e.backingOf(filepath.Join(zone, rel)))
		on[v]++
	}
	if int64(on[2]) < j.Reencrypted || on[1] == 0 {
		t.Errorf("after cancel: files per version %v, job says %d re-encrypted", on, j.Reencrypted)
	}
	e.checkZone(zone, sums, 1)
	e.run("reencrypt", "start", "--wait", zone)
	if j := e.job(zone); j.State != "Completed" || j.AlreadyCurrent < int64(on[2]) {
		t.Errorf("second job: %+v", j)
	}
	e.checkZone(zone, sums, 2)
}

// TestReencryptFailure: a file whose EDEK cannot be opened is counted and listed with
// its reason, the others are done, and the job ends Failed.
func TestReencryptFailure(t *testing.T) {
	e := newEnv(t)
	zone := e.zone("z", "k")
	sums := fill(t, zone, 300)
	bad := "d05/e0/f00005"
	rec, _ := edekOf(t, e.backingOf(filepath.Join(zone, bad)))
	rec[len(rec)-3] ^= 1
	if err := unix.Lsetxattr(e.backingOf(filepath.Join(zone, bad)), "user.ezfs.edek", rec, 0); err != nil {
		t.Fatal(err)
	}
	delete(sums, bad)
	e.run("key", "roll", "--mount", e.mnt, "k")
	e.fails("the job failed", "reencrypt", "start", "--wait", zone)
	j := e.job(zone)
	if j.State != "Failed" || j.Failures != 1 || len(j.FailedFiles) != 1 || j.FailedFiles[0].Path != bad ||
		!strings.Contains(j.FailedFiles[0].Reason, "authentication failed") || j.Reencrypted != 299 {
		t.Errorf("job: %+v", j)
	}
	out := e.run("reencrypt", "status", "--failures", zone)
	if !strings.Contains(out, "/z/"+bad) || !strings.Contains(out, "authentication failed") {
		t.Errorf("status --failures:\n%s", out)
	}
	e.checkZone(zone, sums, 2)
}
