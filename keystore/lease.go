package keystore

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// A zone's reencryption job has one owner across every daemon of a keystore: the one
// holding its Claim. Only the holder writes the job record (PutJob takes the claim and
// is refused once it is lost). With bbolt one daemon has the keystore: a claim is a
// local mark that is never lost. With etcd it is a lease-backed ownership key
// (lease_etcd.go): a daemon that dies stops renewing its lease, etcd deletes the key
// after the TTL, and another daemon claims the job and resumes it from its checkpoint.

// Errors of job ownership.
var (
	// ErrClaimed is a job a daemon (another, or this one) owns already.
	ErrClaimed = errors.New("the job is owned by a daemon")
	// ErrClaimLost refuses a job record write by a daemon whose claim ended (its
	// lease expired, it was released): another daemon may own the job now.
	ErrClaimLost = errors.New("ownership of the job was lost")
)

// DefaultJobLease is how long an etcd ownership claim outlives its daemon.
const DefaultJobLease = 10 * time.Second

// JobLeaseEnv, in the environment of `ezfs mount`, sets the job lease TTL for tests (a
// Go duration of at least 2s, rounded up to whole seconds).
const JobLeaseEnv = "EZFS_TEST_JOB_LEASE"

// JobLease is the job lease TTL: DefaultJobLease, or JobLeaseEnv's.
func JobLease() (time.Duration, error) {
	v := os.Getenv(JobLeaseEnv)
	if v == "" {
		return DefaultJobLease, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 2*time.Second {
		return 0, fmt.Errorf("%s=%q: want a duration of at least 2s: %w", JobLeaseEnv, v, ErrBadInput)
	}
	return d.Round(time.Second), nil
}

// Claim is a daemon's ownership of one zone's job.
type Claim struct {
	s      *Store
	zoneID string
	owner  string
	lost   chan struct{}
	once   sync.Once
	etcd   *etcdClaim // nil for bbolt
}

// Owner names the daemon holding the claim: HOST:PID.
func (c *Claim) Owner() string { return c.owner }

// Lost is closed once the claim no longer holds: released, or (etcd) its lease was not
// renewed in time or a write found another owner. The holder stops its work then.
func (c *Claim) Lost() <-chan struct{} { return c.lost }

func (c *Claim) held() bool {
	select {
	case <-c.lost:
		return false
	default:
		return true
	}
}

// markLost ends the claim for this daemon (the ownership key may outlive it in etcd
// until its lease expires).
func (c *Claim) markLost() { c.once.Do(func() { close(c.lost) }) }

// Release gives the job up, so that another daemon may claim it at once.
func (c *Claim) Release() {
	c.markLost()
	if c.etcd != nil {
		c.etcd.release()
		return
	}
	c.s.local.CompareAndDelete(c.zoneID, c)
}

// daemonID is this process as a job owner.
func daemonID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	return host + ":" + strconv.Itoa(os.Getpid())
}

// ClaimJob makes this daemon the owner of zone zoneID's job, for ttl after it stops
// renewing (etcd; 0: DefaultJobLease). ErrClaimed if any daemon owns it already.
func (s *Store) ClaimJob(zoneID string, ttl time.Duration) (*Claim, error) {
	if ttl <= 0 {
		ttl = DefaultJobLease
	}
	c := &Claim{s: s, zoneID: zoneID, owner: daemonID(), lost: make(chan struct{})}
	if b, ok := s.db.(*etcdBackend); ok {
		ec, holder, err := b.claim(zoneID, c.owner, ttl, c.markLost)
		if err != nil {
			return nil, err
		}
		if ec == nil {
			return nil, fmt.Errorf("%w: %s", ErrClaimed, holder)
		}
		c.etcd = ec
		return c, nil
	}
	if _, taken := s.local.LoadOrStore(zoneID, c); taken {
		return nil, fmt.Errorf("%w: %s", ErrClaimed, c.owner)
	}
	return c, nil
}

// Job returns zone zoneID's job record (nil if it has none), with its owner as Jobs.
func (s *Store) Job(zoneID string) (*Job, error) {
	js, err := s.Jobs()
	if err != nil {
		return nil, err
	}
	for _, j := range js {
		if j.ZoneID == zoneID {
			return j, nil
		}
	}
	return nil, nil
}

// liveOwners sets the Owner of every unfinished job of js to its claim's holder now,
// "" when no daemon holds one (its owner died or stopped: any daemon may take it over).
// A finished job keeps the owner that ended it.
func (s *Store) liveOwners(js []*Job) error {
	owners := map[string]string{}
	if b, ok := s.db.(*etcdBackend); ok {
		var err error
		if owners, err = b.owners(); err != nil {
			return err
		}
	} else {
		s.local.Range(func(k, v any) bool {
			owners[k.(string)] = v.(*Claim).owner
			return true
		})
	}
	for _, j := range js {
		if j.Active() {
			j.Owner = owners[j.ZoneID]
		}
	}
	return nil
}
