package daemon

import (
	"errors"
	"time"

	"github.com/ezfs/ezfs/control"
	"github.com/ezfs/ezfs/keystore"
	"github.com/ezfs/ezfs/zones"
)

func (d *daemon) reencrypt(op string, a control.ReencryptArgs) (any, error) {
	rel := zones.Clean(a.Path)
	var e *zones.Entry
	if !a.All {
		if e = d.registry.At(rel); e == nil {
			return nil, NotFoundError("/%s is not an encryption zone root", rel)
		}
	}
	switch op {
	case control.OpReencryptStart:
		if why := d.fsys.ZoneHealth(*e); why != "" {
			return nil, Reword(zones.ErrDamaged, "zone /%s is damaged: %s", rel, why)
		}
		if err := d.store.Usable(e.Zone.Key); err != nil {
			return nil, Reword(keystore.ErrKeyState, "zone /%s: %v: enable it first", rel, err)
		}
		j, err := d.reenc.Start(*e, a.Rate)
		if err != nil {
			return nil, err
		}
		return jobStatus(zones.JobInfo{Job: *j}), nil
	case control.OpReencryptCancel:
		j, err := d.reenc.Cancel(e.Zone.IDString())
		if errors.Is(err, zones.ErrNoJob) {
			return nil, Reword(err, "zone /%s has no running reencryption job", rel)
		}
		if err != nil {
			return nil, err
		}
		return jobStatus(zones.JobInfo{Job: *j}), nil
	}
	jobs, err := d.reenc.Jobs()
	if err != nil {
		return nil, err
	}
	out := []control.JobStatus{}
	for _, j := range jobs {
		if e == nil || j.ZoneID == e.Zone.IDString() {
			out = append(out, jobStatus(j))
		}
	}
	if e != nil && len(out) == 0 {
		return nil, Reword(zones.ErrNoJob, "zone /%s has never been re-encrypted", rel)
	}
	return out, nil
}

func jobStatus(j zones.JobInfo) control.JobStatus {
	s := control.JobStatus{
		Zone: "/" + j.ZonePath, ZoneID: j.ZoneID, Key: j.Key, State: j.State, Target: j.Target,
		Submitted: j.Submitted, Canceled: j.Canceled, Reencrypted: j.Rewrapped, AlreadyCurrent: j.Current,
		Failures: j.Failures, Files: j.Files, ExtraLinks: j.Links, Total: j.Total, Checkpoint: j.Checkpoint,
		Pass: j.Pass, Percent: j.Percent, FilesPerSecond: j.Rate, ETASeconds: j.ETA.Seconds(),
		RateLimit: j.Job.Rate, Reason: j.Reason, UpgradedV1: j.UpgradedV1, Owner: j.Owner,
	}
	if !j.Completed.IsZero() {
		t := j.Completed
		s.Completed = &t
	}
	for _, f := range j.FailedFiles {
		s.FailedFiles = append(s.FailedFiles, control.FailedFile{Path: f.Path, Reason: f.Reason})
	}
	return s
}

// fileCounts adds up, per version of key name, the files the last finished job of each
// zone using the key found. Canceled jobs saw only part of their zone and do not count.
func (d *daemon) fileCounts(name string) (map[uint32]int64, time.Time) {
	jobs, err := d.store.Jobs()
	if err != nil {
		return nil, time.Time{}
	}
	var counts map[uint32]int64
	var at time.Time
	for _, j := range jobs {
		if j.Key != name || (j.State != keystore.JobCompleted && j.State != keystore.JobFailed) || j.Versions == nil {
			continue
		}
		if counts == nil {
			counts = map[uint32]int64{}
		}
		for v, n := range j.Versions {
			counts[v] += n
		}
		if j.Completed.After(at) {
			at = j.Completed
		}
	}
	return counts, at
}
