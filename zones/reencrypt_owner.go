package zones

import (
	"errors"
	"fmt"
	"time"

	"github.com/ezfs/ezfs/keystore"
)

// A zone's job runs on the daemon that owns it (keystore.Claim): the one that started
// it, or one that took it over once its owner stopped owning it (died, lost its etcd
// lease, unmounted). With a bbolt keystore that is always this daemon.

// Resume restarts every unfinished job no daemon owns, at mount: those a previous
// daemon left (with bbolt every unfinished job). A job whose zone is gone fails.
func (r *Reencryptor) Resume(reg *Registry) error { return r.adopt(reg, true) }

// Adopt takes over every unfinished job no daemon owns, from its checkpoint: with an
// etcd keystore the daemon calls it every few seconds, so that a job whose owner died
// resumes here within its lease. A job of a zone this daemon does not know (made on
// another host since this one mounted) is left to the others.
func (r *Reencryptor) Adopt(reg *Registry) error { return r.adopt(reg, false) }

func (r *Reencryptor) adopt(reg *Registry, atMount bool) error {
	jobs, err := r.store.Jobs()
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for _, j := range jobs {
		if r.closed || !j.Active() || j.Owner != "" || r.runs[j.ZoneID] != nil {
			continue
		}
		e := zoneEntry(reg, j.ZoneID)
		if e == nil && !atMount {
			continue
		}
		if err := r.takeLocked(j.ZoneID, e, atMount); err != nil {
			errs = append(errs, fmt.Errorf("job of zone %s: %w", j.ZoneID, err))
		}
	}
	return errors.Join(errs...)
}

func zoneEntry(reg *Registry, id string) *Entry {
	for _, e := range reg.List() {
		if e.Zone.IDString() == id {
			return &e
		}
	}
	return nil
}

// takeLocked claims zone id's job and runs it from its checkpoint; e is its zone (nil:
// the zone no longer exists, the job fails).
func (r *Reencryptor) takeLocked(id string, e *Entry, atMount bool) error {
	claim, err := r.store.ClaimJob(id, r.Lease)
	if errors.Is(err, keystore.ErrClaimed) {
		return nil // another daemon was quicker
	}
	if err != nil {
		return err
	}
	// Read again under the claim: the job's last owner may have ended it meanwhile.
	j, err := r.store.Job(id)
	if err != nil || j == nil || !j.Active() {
		claim.Release()
		return err
	}
	if e == nil {
		j.State, j.Reason, j.Completed = keystore.JobFailed, "the zone no longer exists", time.Now().UTC()
		err := r.store.PutJob(claim, j)
		claim.Release()
		return err
	}
	j.ZonePath = e.Path
	if j.Pass > 0 {
		// A sweep must be whole to prove the zone done: restart it. Sweeps are
		// cheap: files on the target are only read.
		j.Checkpoint = ""
		j.Versions = map[uint32]int64{}
	}
	how := "resuming"
	if !atMount {
		how = "taking over the job no daemon owns"
	}
	r.log.Printf("reencrypt /%s: %s at pass %d after %q", j.ZonePath, how, j.Pass, j.Checkpoint)
	r.launchLocked(j, e.Zone, claim)
	return nil
}

// runningElsewhere is ErrJobRunning for zone id's job if another daemon owns it (nil if
// none does).
func (r *Reencryptor) runningElsewhere(id string) error {
	j, err := r.store.Job(id)
	if err != nil {
		return err
	}
	if j != nil && j.Active() && j.Owner != "" {
		return fmt.Errorf("zone /%s: %w on daemon %s: cancel it through that host", j.ZonePath, ErrJobRunning, j.Owner)
	}
	return nil
}

// stopWhenLost stops the run once its claim is lost; it returns when the run ends.
func (ru *run) stopWhenLost() {
	select {
	case <-ru.claim.Lost():
		ru.lost.Store(true)
		ru.cancel()
	case <-ru.done:
	}
}
