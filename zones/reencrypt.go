package zones

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ezfs/ezfs/backing"
	"github.com/ezfs/ezfs/crypto"
	"github.com/ezfs/ezfs/keystore"
	"golang.org/x/sys/unix"
)

// FileSystem is what the worker needs from the mounted file system, which implements it.
type FileSystem interface {
	// LockFile takes the content lock of a backing file, so a rewrap never races a
	// writer of the same inode.
	LockFile(st *unix.Stat_t) (unlock func())
	// Moves counts the renames and hard links made in a zone since the mount. A pass
	// over the zone during which it did not change has seen every file.
	Moves(zone crypto.ZoneID) uint64
}

// Errors of the reencrypt commands.
var (
	ErrJobRunning = errors.New("a reencryption job is already running")
	ErrNoJob      = errors.New("no reencryption job")
)

const (
	checkpointFiles = 2000
	checkpointEvery = 2 * time.Second
	maxSweeps       = 10
	maxListed       = 10000 // failed files kept in the job record; the counter is exact
	retries         = 3
)

// Reencryptor runs the reencryption jobs of one mount: it re-wraps every file's EDEK
// with the newest zone key version, checkpointing in the keystore so that a job
// survives a crash.
type Reencryptor struct {
	backing *backing.Root
	keys    *Keys
	store   *keystore.Store
	audit   *keystore.Audit
	fsys    FileSystem
	log     *log.Logger
	// Workers is the number of files re-wrapped in parallel.
	Workers int
	// Lease is how long a job's ownership outlives a daemon that died (an etcd
	// keystore's; 0: keystore.DefaultJobLease).
	Lease time.Duration

	mu   sync.Mutex
	runs map[string]*run // running jobs by zone ID; guarded by mu
	// closed: Close was called, no job starts any more; guarded by mu
	closed bool
	wg     sync.WaitGroup
}

// NewReencryptor returns the job runner for the zones under root.
func NewReencryptor(root *backing.Root, keys *Keys, fsys FileSystem, audit *keystore.Audit, lg *log.Logger) *Reencryptor {
	return &Reencryptor{backing: root, keys: keys, store: keys.Ring.Store(), audit: audit, fsys: fsys, log: lg,
		Workers: 2, runs: map[string]*run{}}
}

// Start submits a job for zone e: its target is the newest version of the zone's key.
func (r *Reencryptor) Start(e Entry, rate float64) (*keystore.Job, error) {
	if rate < 0 {
		return nil, fmt.Errorf("--rate must not be negative")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	id := e.Zone.IDString()
	if old := r.runs[id]; old != nil {
		j := old.snapshot()
		return nil, fmt.Errorf("zone /%s: %w (target %s@%d, %s): cancel it first or wait", e.Path, ErrJobRunning, j.Key, j.Target, j.State)
	}
	zk, err := r.store.ZoneKey(e.Zone.Key)
	if err != nil {
		return nil, err
	}
	claim, err := r.store.ClaimJob(id, r.Lease)
	if errors.Is(err, keystore.ErrClaimed) {
		return nil, fmt.Errorf("zone /%s: %w (%v): cancel it through that host first or wait", e.Path, ErrJobRunning, err)
	}
	if err != nil {
		return nil, err
	}
	j := &keystore.Job{
		ZoneID: id, ZonePath: e.Path, Key: e.Zone.Key, Target: zk.Latest().Version,
		State: keystore.JobSubmitted, Submitted: time.Now().UTC(), Rate: rate, Owner: claim.Owner(),
	}
	if err := r.store.PutJob(claim, j); err != nil {
		claim.Release()
		return nil, err
	}
	r.audit.Action("reencrypt.start", map[string]any{"zone": "/" + e.Path, "key": j.Key, "target": j.Target,
		"main_key": zk.Latest().MainName, "main_version": zk.Latest().MainVersion}, nil)
	r.launchLocked(j, e.Zone, claim)
	return j, nil
}

// launchLocked runs job j of zone z, which this daemon owns through claim: the run
// stops if the claim is lost and releases it when it ends.
func (r *Reencryptor) launchLocked(j *keystore.Job, z *Zone, claim *keystore.Claim) {
	ctx, cancel := context.WithCancel(context.Background())
	j.Owner = claim.Owner()
	ru := &run{r: r, zone: z, root: j.ZonePath, target: j.Target, ctx: ctx, cancel: cancel, claim: claim,
		resumed: j.Checkpoint != "",
		done:    make(chan struct{}), job: *j, failed: map[string]string{}, seen: map[[2]uint64]outcome{}}
	for _, f := range j.FailedFiles {
		ru.failed[f.Path] = f.Reason
	}
	r.runs[j.ZoneID] = ru
	r.wg.Add(1)
	go ru.stopWhenLost()
	go func() {
		defer r.wg.Done()
		ru.loop()
		claim.Release()
		r.mu.Lock()
		delete(r.runs, j.ZoneID)
		r.mu.Unlock()
		close(ru.done)
	}()
}

// Cancel stops zone id's job; it keeps what was done. It returns once the job stopped.
func (r *Reencryptor) Cancel(id string) (*keystore.Job, error) {
	r.mu.Lock()
	ru := r.runs[id]
	r.mu.Unlock()
	if ru == nil {
		if err := r.runningElsewhere(id); err != nil {
			return nil, err
		}
		return nil, ErrNoJob
	}
	ru.userCanceled.Store(true)
	ru.cancel()
	<-ru.done
	j := ru.snapshot()
	r.audit.Action("reencrypt.cancel", map[string]any{"zone": "/" + j.ZonePath}, nil)
	return &j, nil
}

// CancelKey stops the running jobs of the zones of key name (it stops serving), each
// audited with why, which its record keeps as its reason. It returns the zones whose
// job it stopped, once they stopped.
func (r *Reencryptor) CancelKey(name, why string) []string {
	r.mu.Lock()
	var rus []*run
	for _, ru := range r.runs {
		if ru.zone.Key == name {
			rus = append(rus, ru)
		}
	}
	r.mu.Unlock()
	var out []string
	for _, ru := range rus {
		ru.cancelWhy.Store(&why)
		ru.userCanceled.Store(true)
		ru.cancel()
		<-ru.done
		out = append(out, "/"+ru.root)
		r.audit.Action("reencrypt.cancel", map[string]any{"zone": "/" + ru.root, "key": name, "reason": why}, nil)
		r.log.Printf("reencrypt /%s: cancelled: %s", ru.root, why)
	}
	return out
}

// ActiveOn lists the zones with a job on key name that is not finished: running, or
// recorded as running (submitted, or left by a daemon that stopped).
func (r *Reencryptor) ActiveOn(name string) ([]string, error) {
	jobs, err := r.store.Jobs()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, j := range jobs {
		if j.Key == name && j.Active() {
			out = append(out, "/"+j.ZonePath)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ru := range r.runs {
		if ru.zone.Key == name && !slices.Contains(out, "/"+ru.root) {
			out = append(out, "/"+ru.root)
		}
	}
	slices.Sort(out)
	return out, nil
}

// JobInfo is a job with the figures derived from its progress.
type JobInfo struct {
	keystore.Job
	Percent float64
	Rate    float64 // files per second while running
	ETA     time.Duration
}

// Jobs returns the latest job of every zone, live for running ones.
func (r *Reencryptor) Jobs() ([]JobInfo, error) {
	stored, err := r.store.Jobs()
	if err != nil {
		return nil, err
	}
	out := make([]JobInfo, 0, len(stored))
	for _, j := range stored {
		r.mu.Lock()
		ru := r.runs[j.ZoneID]
		r.mu.Unlock()
		if ru != nil {
			out = append(out, ru.info())
			continue
		}
		ji := JobInfo{Job: *j}
		if d := j.Completed.Sub(j.Submitted).Seconds(); !j.Completed.IsZero() && d > 0 {
			ji.Rate = float64(j.Scanned) / d // the average over the job
		}
		if j.State == keystore.JobCompleted {
			ji.Percent = 100
		} else if j.Total > 0 {
			ji.Percent = min(99, 100*float64(j.Scanned)/float64(j.Total))
		}
		out = append(out, ji)
	}
	return out, nil
}

// Close stops every job for a shutdown; they stay Processing and resume next mount.
func (r *Reencryptor) Close() {
	r.mu.Lock()
	r.closed = true
	for _, ru := range r.runs {
		ru.cancel()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// run is one job being executed.
type run struct {
	r            *Reencryptor
	zone         *Zone
	root         string // the zone root, relative to the backing root
	target       uint32 // the job's target version, fixed at submission
	resumed      bool   // the current pass started before this daemon did
	ctx          context.Context
	cancel       context.CancelFunc
	userCanceled atomic.Bool
	cancelWhy    atomic.Pointer[string] // why the job was cancelled, if not by its own command
	claim        *keystore.Claim        // this daemon's ownership of the job
	lost         atomic.Bool            // the claim was lost: another daemon may run the job
	done         chan struct{}

	mu        sync.Mutex
	job       keystore.Job          // guarded by mu: the live record
	failed    map[string]string     // guarded by mu: path → reason, current failures
	seen      map[[2]uint64]outcome // coordinator only: hard-linked inodes counted, as what
	startedAt time.Time             // guarded by mu
	scannedAt int64                 // guarded by mu: Scanned when this run started
	lastSave  time.Time             // coordinator only
	sinceSave int                   // coordinator only
}

func (ru *run) snapshot() keystore.Job {
	ru.mu.Lock()
	defer ru.mu.Unlock()
	j := ru.job
	j.FailedFiles = nil
	for p, why := range ru.failed {
		if len(j.FailedFiles) >= maxListed {
			break
		}
		j.FailedFiles = append(j.FailedFiles, keystore.FailedFile{Path: p, Reason: why})
	}
	sortFailed(j.FailedFiles)
	j.Versions = cloneVersions(ru.job.Versions)
	return j
}

func cloneVersions(m map[uint32]int64) map[uint32]int64 {
	out := make(map[uint32]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func sortFailed(f []keystore.FailedFile) {
	for i := 1; i < len(f); i++ {
		for k := i; k > 0 && f[k].Path < f[k-1].Path; k-- {
			f[k], f[k-1] = f[k-1], f[k]
		}
	}
}

func (ru *run) info() JobInfo {
	j := ru.snapshot()
	ru.mu.Lock()
	elapsed := time.Since(ru.startedAt).Seconds()
	done := j.Scanned - ru.scannedAt
	ru.mu.Unlock()
	ji := JobInfo{Job: j}
	if elapsed > 0 && done > 0 {
		ji.Rate = float64(done) / elapsed
	}
	switch {
	case j.Pass > 0:
		ji.Percent = 99
	case j.Total > 0:
		ji.Percent = min(99, 100*float64(j.Scanned)/float64(j.Total))
	}
	if ji.Rate > 0 && j.Pass == 0 && j.Total > j.Scanned {
		ji.ETA = time.Duration(float64(j.Total-j.Scanned) / ji.Rate * float64(time.Second))
	}
	return ji
}

func (ru *run) save() error {
	j := ru.snapshot()
	err := ru.r.store.PutJob(ru.claim, &j)
	if err != nil {
		ru.r.log.Printf("reencrypt /%s: checkpoint: %v", j.ZonePath, err)
	}
	ru.lastSave, ru.sinceSave = time.Now(), 0
	return err
}

func (ru *run) finish(state, reason string) {
	ru.mu.Lock()
	ru.job.State, ru.job.Reason, ru.job.Completed = state, reason, time.Now().UTC()
	ru.job.Canceled = state == keystore.JobCanceled
	j := ru.job
	ru.mu.Unlock()
	if err := ru.save(); errors.Is(err, keystore.ErrClaimLost) {
		return // the job's new owner ends it
	}
	ru.r.log.Printf("reencrypt /%s: %s: %d re-encrypted (%d from EDEK format v1), %d already current, %d failures %s",
		j.ZonePath, state, j.Rewrapped, j.UpgradedV1, j.Current, len(ru.failed), reason)
	ru.r.audit.Action("reencrypt.end", map[string]any{"zone": "/" + j.ZonePath, "state": state,
		"reencrypted": j.Rewrapped, "upgraded_v1": j.UpgradedV1, "failures": j.Failures, "target": j.Target}, nil)
}

func (ru *run) loop() {
	ru.mu.Lock()
	ru.job.State = keystore.JobProcessing
	ru.startedAt, ru.scannedAt = time.Now(), ru.job.Scanned
	needTotal := ru.job.Pass == 0 && ru.job.Total == 0
	ru.mu.Unlock()
	if needTotal {
		n, err := countFiles(ru.ctx, ru.r.backing, ru.root)
		if err != nil && ru.ctx.Err() == nil {
			ru.finish(keystore.JobFailed, "walk the zone: "+err.Error())
			return
		}
		ru.mu.Lock()
		ru.job.Total = n
		ru.mu.Unlock()
	}
	ru.save()
	for {
		movesBefore := ru.r.fsys.Moves(ru.zone.ID)
		err := ru.pass()
		if ru.ctx.Err() != nil {
			if ru.lost.Load() {
				ru.r.log.Printf("reencrypt /%s: stopped: this daemon no longer owns the job (another one takes it over)", ru.root)
				return
			}
			if ru.userCanceled.Load() {
				why := ""
				if p := ru.cancelWhy.Load(); p != nil {
					why = *p
				}
				ru.finish(keystore.JobCanceled, why)
			} else {
				ru.save() // shutdown: stays Processing, resumes at the next mount or on another daemon
			}
			return
		}
		if err != nil {
			ru.finish(keystore.JobFailed, "walk the zone: "+err.Error())
			return
		}
		// A whole pass with no rename or link in the zone has seen every file; else a
		// sweep over the whole zone catches files that moved behind the walk.
		complete := !ru.resumed && ru.r.fsys.Moves(ru.zone.ID) == movesBefore
		ru.mu.Lock()
		pass, nfailed := ru.job.Pass, len(ru.failed)
		if !complete && pass < maxSweeps {
			ru.job.Pass++
			ru.job.Checkpoint = ""
			ru.job.Versions = map[uint32]int64{}
		}
		ru.mu.Unlock()
		ru.resumed = false
		switch {
		case complete && nfailed > 0:
			ru.finish(keystore.JobFailed, fmt.Sprintf("%d files could not be re-encrypted (see --failures)", nfailed))
			return
		case complete:
			ru.finish(keystore.JobCompleted, "")
			return
		case pass >= maxSweeps:
			ru.finish(keystore.JobFailed, fmt.Sprintf("files were still being renamed after %d sweeps; start again", maxSweeps))
			return
		}
		ru.save()
	}
}

// walk calls emit for every regular file below zone root zrel in walk order, after
// checkpoint; paths are relative to the zone root.
func walk(ctx context.Context, b *backing.Root, zrel, rel, checkpoint string, emit func(rel string) bool) error {
	return walkEntries(ctx, b, zrel, rel, checkpoint, func(p string, typ os.FileMode) bool {
		return !typ.IsRegular() || emit(p)
	})
}

// joinRel joins two relative paths, either of which may be "".
func joinRel(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "/" + b
}

func countFiles(ctx context.Context, b *backing.Root, zrel string) (int64, error) {
	var n int64
	err := walk(ctx, b, zrel, "", "", func(string) bool { n++; return true })
	return n, err
}

type outcome int

const (
	rewrapped outcome = iota
	current
	gone
	failed
)

type item struct {
	seq int64
	rel string
}

type result struct {
	item
	outcome outcome
	version uint32 // the file's key version afterwards
	fromV1  bool   // rewrapped from an EDEK record in format v1
	reason  string
	devIno  [2]uint64
	nlink   uint64
}

// pass walks the zone from the checkpoint, re-wrapping in parallel and advancing the
// checkpoint in walk order.
func (ru *run) pass() error {
	ru.mu.Lock()
	checkpoint, rate, isSweep := ru.job.Checkpoint, ru.job.Rate, ru.job.Pass > 0
	ru.mu.Unlock()
	ru.seen = map[[2]uint64]outcome{}
	items := make(chan item, 256)
	results := make(chan result, 256)
	var walkErr error
	go func() {
		defer close(items)
		var seq int64
		start := time.Now()
		walkErr = walk(ru.ctx, ru.r.backing, ru.root, "", checkpoint, func(rel string) bool {
			if rate > 0 {
				due := start.Add(time.Duration(float64(seq) / rate * float64(time.Second)))
				if d := time.Until(due); d > 0 {
					select {
					case <-time.After(d):
					case <-ru.ctx.Done():
						return false
					}
				}
			}
			select {
			case items <- item{seq: seq, rel: rel}:
				seq++
				return true
			case <-ru.ctx.Done():
				return false
			}
		})
	}()
	var wg sync.WaitGroup
	for w := 0; w < max(1, ru.r.Workers); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range items {
				results <- ru.process(it)
			}
		}()
	}
	go func() { wg.Wait(); close(results) }()

	// Results arrive out of order; the checkpoint only moves past a path once every
	// path before it is done.
	pending := map[int64]result{}
	var next int64
	for res := range results {
		pending[res.seq] = res
		for {
			r, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			next++
			ru.apply(r, isSweep)
		}
		if ru.sinceSave >= checkpointFiles || time.Since(ru.lastSave) >= checkpointEvery {
			ru.save()
		}
	}
	return walkErr
}

// apply records a file's result in the job, in walk order.
func (ru *run) apply(res result, isSweep bool) {
	ru.mu.Lock()
	defer ru.mu.Unlock()
	j := &ru.job
	j.Checkpoint = res.rel
	ru.sinceSave++
	if res.outcome == gone {
		return
	}
	if !isSweep {
		j.Scanned++
	}
	// Another name of an inode seen in this pass: the inode is counted at its first.
	// Its names are processed in parallel, so the rewrap may have been made through a
	// later name while the first found it current: it is counted as rewrapped then.
	if res.nlink > 1 {
		if first, ok := ru.seen[res.devIno]; ok {
			if !isSweep {
				j.Links++
			}
			if first == current && res.outcome == rewrapped {
				ru.seen[res.devIno] = rewrapped
				j.Rewrapped++
				if res.fromV1 {
					j.UpgradedV1++
				}
				if !isSweep {
					j.Current--
				}
			}
			return
		}
		ru.seen[res.devIno] = res.outcome
	}
	if !isSweep {
		j.Files++
	}
	if j.Versions == nil {
		j.Versions = map[uint32]int64{}
	}
	switch res.outcome {
	case rewrapped:
		j.Rewrapped++
		if res.fromV1 {
			j.UpgradedV1++
		}
		j.Versions[res.version]++
		delete(ru.failed, res.rel)
	case current:
		if !isSweep {
			j.Current++
		}
		j.Versions[res.version]++
		delete(ru.failed, res.rel)
	case failed:
		if _, known := ru.failed[res.rel]; !known {
			j.Failures++
		}
		ru.failed[res.rel] = res.reason
		j.Versions[res.version]++
	}
}

// process re-wraps one file, retrying what may pass (an unavailable provider, an EDEK
// that changed under us).
func (ru *run) process(it item) result {
	var res result
	for attempt := 0; attempt < retries; attempt++ {
		var retry bool
		res, retry = ru.rewrapFile(it)
		if !retry {
			return res
		}
		select {
		case <-time.After(time.Duration(50<<attempt) * time.Millisecond):
		case <-ru.ctx.Done():
			return res
		}
	}
	return res
}

func (ru *run) rewrapFile(it item) (result, bool) {
	res := result{item: it}
	fail := func(why string, retry bool) (result, bool) {
		res.outcome, res.reason = failed, why
		return res, retry
	}
	fd, err := ru.r.backing.Open(joinRel(ru.root, it.rel), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOATIME, 0)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) {
		res.outcome = gone // deleted or replaced while we walked
		return res, false
	}
	if err != nil {
		return fail("open: "+err.Error(), false)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fail("stat: "+err.Error(), false)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		res.outcome = gone
		return res, false
	}
	res.devIno, res.nlink = [2]uint64{uint64(st.Dev), st.Ino}, uint64(st.Nlink)
	rec, err := ReadEDEK(fd)
	if err != nil {
		return fail(err.Error(), false)
	}
	e, err := crypto.ParseEDEK(rec)
	if err != nil {
		return fail("unreadable EDEK: "+err.Error(), false)
	}
	res.version = e.KeyVersion
	target := ru.target
	// A record in an older format is never current: the job rewrites it in the
	// current one, so that a zone is upgraded online. A v2 record is under the zone's
	// key by construction.
	if e.Format == crypto.EDEKCurrent && e.KeyVersion >= target {
		res.outcome = current
		return res, false
	}
	res.fromV1 = e.Format == crypto.EDEKv1
	newRec, err := ru.r.keys.Rewrap(ru.ctx, ru.zone, rec, target)
	if err != nil {
		return fail(err.Error(), errors.Is(err, keystore.ErrUnavailable))
	}
	unlock := ru.r.fsys.LockFile(&st)
	defer unlock()
	now, err := ReadEDEK(fd)
	if err != nil {
		return fail(err.Error(), false)
	}
	if !bytes.Equal(now, rec) {
		return fail("EDEK changed during the rewrap", true)
	}
	if err := WriteEDEK(fd, newRec, true); err != nil {
		return fail("store the new EDEK: "+err.Error(), false)
	}
	res.outcome, res.version = rewrapped, target
	return res, false
}
