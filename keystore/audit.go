package keystore

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// AuditFile is the audit log's name inside the keystore folder.
const AuditFile = "audit.log"

// auditFlushEvery groups provider calls, like Hadoop KMS's aggregated audit lines.
const auditFlushEvery = 5 * time.Second

type unwrapGroup struct {
	MainName    string
	MainVersion uint32
	Provider    string
	Key         string
	Version     uint32
	Result      string
}

// Audit appends JSON lines: one per admin action, and provider calls grouped per key
// version and result. It never sees key material. A nil *Audit discards everything.
type Audit struct {
	mu     sync.Mutex
	f      *os.File               // guarded by mu
	counts map[unwrapGroup]int    // guarded by mu
	first  map[unwrapGroup]string // guarded by mu; time of the first call in the group
	stop   chan struct{}
	done   chan struct{}
}

// EnvLogDir names the folder, on this host, of an etcd keystore's audit log and of the
// daemon's log (a folder keystore keeps both in its folder).
const EnvLogDir = "EZFS_LOG_DIR"

// LogDir is the folder of the audit log (and the daemon's log) of the keystore at
// location: the keystore's own folder; for an etcd keystore a folder of this host,
// $EZFS_LOG_DIR or /var/log/ezfs (each host logs what is done through it).
func LogDir(location string) string {
	if !IsEtcd(location) {
		return location
	}
	if d := os.Getenv(EnvLogDir); d != "" {
		return d
	}
	return "/var/log/ezfs"
}

// MakeLogDir is LogDir(location), made (mode 0700) if it does not exist yet: the
// folder of an etcd keystore's logs may be new on this host. A keystore folder is
// returned as it is (the keystore made it).
func MakeLogDir(location string) (string, error) {
	dir := LogDir(location)
	if IsEtcd(location) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", fmt.Errorf("log folder of keystore %s (%s): %w", location, EnvLogDir, err)
		}
	}
	return dir, nil
}

// OpenAudit opens (appends to) the audit log of the keystore at location, in
// MakeLogDir(location).
func OpenAudit(location string) (*Audit, error) {
	dir, err := MakeLogDir(location)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, AuditFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	a := &Audit{f: f, counts: map[unwrapGroup]int{}, first: map[unwrapGroup]string{},
		stop: make(chan struct{}), done: make(chan struct{})}
	go a.flushLoop()
	return a, nil
}

func (a *Audit) write(rec map[string]any) {
	rec["time"] = time.Now().UTC().Format(time.RFC3339Nano)
	line, err := json.Marshal(rec)
	if err != nil {
		return
	}
	_, _ = a.f.Write(append(line, '\n'))
}

// Action records an admin action and its outcome.
func (a *Audit) Action(op string, fields map[string]any, err error) {
	if a == nil {
		return
	}
	rec := map[string]any{"type": "admin", "op": op, "result": "ok"}
	for k, v := range fields {
		rec[k] = v
	}
	if err != nil {
		rec["result"] = "error"
		rec["error"] = err.Error()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.write(rec)
}

// CountUnwrap counts one provider unwrap call for the next grouped line.
func (a *Audit) CountUnwrap(mk *MainKey, name string, version uint32, err error) {
	if a == nil {
		return
	}
	g := unwrapGroup{MainName: mk.Name, MainVersion: mk.Version, Provider: mk.Provider, Key: name, Version: version, Result: "ok"}
	switch {
	case err == nil:
	case errors.Is(err, ErrUnavailable):
		g.Result = "unavailable"
	case errors.Is(err, ErrPermission):
		g.Result = "permission_denied"
	case errors.Is(err, ErrKeyNotFound):
		g.Result = "key_not_found"
	default:
		g.Result = "invalid_ciphertext"
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.counts[g] == 0 {
		a.first[g] = time.Now().UTC().Format(time.RFC3339Nano)
	}
	a.counts[g]++
}

func (a *Audit) flushLocked() {
	for g, n := range a.counts {
		a.write(map[string]any{
			"type": "provider", "op": "unwrap", "provider": g.Provider, "main_key": g.MainName, "main_version": g.MainVersion,
			"key": g.Key, "key_version": g.Version, "result": g.Result, "count": n, "first": a.first[g],
		})
		delete(a.counts, g)
		delete(a.first, g)
	}
}

func (a *Audit) flushLoop() {
	defer close(a.done)
	t := time.NewTicker(auditFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
			a.mu.Lock()
			a.flushLocked()
			a.mu.Unlock()
		}
	}
}

// Close flushes pending groups and closes the file.
func (a *Audit) Close() error {
	if a == nil {
		return nil
	}
	close(a.stop)
	<-a.done
	a.mu.Lock()
	defer a.mu.Unlock()
	a.flushLocked()
	return a.f.Close()
}
