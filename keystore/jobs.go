package keystore

import (
	"fmt"
	"time"
)

var bucketJobs = []byte("jobs")

// Reencryption job states, as HDFS names them.
const (
	JobSubmitted  = "Submitted"
	JobProcessing = "Processing"
	JobCompleted  = "Completed"
	JobCanceled   = "Canceled"
	JobFailed     = "Failed"
)

// FailedFile is a file a job could not re-encrypt, and why.
type FailedFile struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// Job is the persistent state of a zone's reencryption job: what it targets, how far it
// got (the checkpoint), and what it found. One record per zone: the latest job.
type Job struct {
	ZoneID    string    `json:"zone_id"`
	ZonePath  string    `json:"zone"`
	Key       string    `json:"key"`
	Target    uint32    `json:"target_version"`
	State     string    `json:"state"`
	Submitted time.Time `json:"submitted"`
	Completed time.Time `json:"completed,omitempty"`
	Canceled  bool      `json:"canceled"`
	Rate      float64   `json:"rate_limit,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	// Owner is the daemon (HOST:PID) running the job; Jobs shows the live owner of an
	// unfinished job, "" when none holds it (lease.go), and who ran a finished one.
	Owner string `json:"owner,omitempty"`

	// Progress. Pass 0 is the main walk; later passes are sweeps that catch files
	// renamed behind the walk. Checkpoint is the last path (relative to the zone root)
	// of the current pass below which every file is done.
	Pass       int    `json:"pass"`
	Checkpoint string `json:"checkpoint"`
	Total      int64  `json:"total_estimate"`
	Scanned    int64  `json:"scanned"`
	Files      int64  `json:"files"`
	Links      int64  `json:"extra_links"`
	Rewrapped  int64  `json:"reencrypted"`
	Current    int64  `json:"already_current"`
	Failures   int64  `json:"failures"`
	UpgradedV1 int64  `json:"upgraded_v1"` // of Rewrapped, records that were EDEK format v1

	FailedFiles []FailedFile `json:"failed_files,omitempty"`
	// Versions counts files per zone key version when the job ended: the reference
	// counts `key describe` shows.
	Versions map[uint32]int64 `json:"versions,omitempty"`
}

// Active reports whether the job still has work to do.
func (j *Job) Active() bool { return j.State == JobSubmitted || j.State == JobProcessing }

// PutJob stores a zone's job record (one write transaction: a checkpoint) if c, this
// daemon's claim of the zone's job, still holds: with etcd the write and the check of
// the ownership key are one transaction, so a daemon that lost its lease never writes
// over its successor's record. ErrClaimLost otherwise.
func (s *Store) PutJob(c *Claim, j *Job) error {
	if c == nil || c.s != s || c.zoneID != j.ZoneID || !c.held() {
		return fmt.Errorf("job of zone %s: %w", j.ZoneID, ErrClaimLost)
	}
	put := func(tx txn) error { return putJSON(tx, bucketJobs, []byte(j.ZoneID), j) }
	if c.etcd != nil {
		return c.etcd.update(put)
	}
	return s.db.Update(put)
}

// Jobs lists the latest job of every zone, each unfinished one with its live owner.
func (s *Store) Jobs() ([]*Job, error) {
	js, err := listJSON[Job](s.db, bucketJobs)
	if err != nil {
		return nil, err
	}
	if err := s.liveOwners(js); err != nil {
		return nil, err
	}
	return js, nil
}
