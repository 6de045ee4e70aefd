package daemon

import (
	"time"

	"github.com/ezfs/ezfs/keystore"
)

// adoptEvery is how often a daemon with an etcd keystore looks for reencryption jobs
// no daemon owns; never more than a quarter of the job lease, so that a job whose
// owner died is taken over soon after its lease expires.
const adoptEvery = 2 * time.Second

// adoptJobs takes over, until stop is closed, the reencryption jobs no daemon owns (their
// owner died, lost its lease or unmounted) from their checkpoints. Only with an etcd
// keystore: with bbolt this daemon is the only one, and Resume at mount took its jobs.
func (d *daemon) adoptJobs(stop <-chan struct{}) {
	if !keystore.IsEtcd(d.store.Dir()) {
		return
	}
	every := min(adoptEvery, d.reenc.Lease/4)
	if every <= 0 {
		every = adoptEvery
	}
	t := time.NewTicker(every)
	defer t.Stop()
	last := ""
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		msg := ""
		if err := d.reenc.Adopt(d.registry); err != nil {
			msg = err.Error()
		}
		if msg != last && msg != "" {
			d.log.Printf("take over reencryption jobs: %s", msg) // once until it changes
		}
		last = msg
	}
}
