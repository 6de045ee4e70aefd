package integration

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ezfs/ezfs/control"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sys/unix"
)

// scrape is one scrape of the metrics socket, parsed by Prometheus' own text parser.
type scrape map[string]*dto.MetricFamily

func scrapeMetrics(t *testing.T, sock string) scrape {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := c.Get("http://ezfs/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse the scrape: %v", err)
	}
	return fams
}

// value adds up the samples of metric name whose labels include want (a histogram
// counts its observations).
func (s scrape) value(name string, want map[string]string) float64 {
	f := s[name]
	if f == nil {
		return 0
	}
	sum := 0.0
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum
}

// uncached drops the kernel's page cache of f, so the next read reaches the daemon.
func uncached(t *testing.T, f string) {
	t.Helper()
	fd, err := unix.Open(f, unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
}

// TestMetrics (issue 16, criterion 4): scrapes of --metrics during a workload parse with
// expfmt and the counters move: FUSE requests, bytes read and written in the zone, key
// unwraps, a block authentication failure after a planted flip, reencrypt progress.
func TestMetrics(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "metrics.sock")
	e := newEnv(t)
	zone := e.zone("z", "k")
	e.umount()
	// The helper option and the flag are the same: mount with the flag.
	e.run("mount", "--metrics", sock, e.backing, e.mnt)
	var zid string
	for _, z := range e.zoneList() {
		if z.Path == "/z" {
			zid = z.ID
		}
	}
	zl := map[string]string{"zone": zid}
	s0 := scrapeMetrics(t, sock)
	for _, name := range []string{"ezfs_build_info", "ezfs_provider_up", "ezfs_zone_info", "ezfs_key_cache_size"} {
		if s0[name] == nil {
			t.Errorf("no %s in the first scrape", name)
		}
	}
	if v := s0.value("ezfs_provider_up", map[string]string{"main_key": "default", "provider": "system"}); v != 1 {
		t.Errorf("ezfs_provider_up of default = %v", v)
	}

	data := patterned(256 << 10)
	f := filepath.Join(zone, "f")
	if err := os.WriteFile(f, data, 0o644); err != nil {
		t.Fatal(err)
	}
	uncached(t, f)
	if b, err := os.ReadFile(f); err != nil || len(b) != len(data) {
		t.Fatalf("read back: %d %v", len(b), err)
	}
	s1 := scrapeMetrics(t, sock)
	if d := s1.value("ezfs_zone_written_bytes_total", zl) - s0.value("ezfs_zone_written_bytes_total", zl); d < float64(len(data)) {
		t.Errorf("written bytes moved by %v, want %d", d, len(data))
	}
	if d := s1.value("ezfs_zone_read_bytes_total", zl) - s0.value("ezfs_zone_read_bytes_total", zl); d < float64(len(data)) {
		t.Errorf("read bytes moved by %v, want %d", d, len(data))
	}
	for _, op := range []string{"write", "read", "create", "lookup"} {
		if d := s1.value("ezfs_fuse_requests_total", map[string]string{"op": op}) - s0.value("ezfs_fuse_requests_total", map[string]string{"op": op}); d < 1 {
			t.Errorf("ezfs_fuse_requests_total{op=%q} did not move", op)
		}
	}
	if s1.value("ezfs_fuse_request_duration_seconds", map[string]string{"op": "write"}) < 1 {
		t.Error("no write latency observed")
	}
	unwrapOK := map[string]string{"main_key": "default", "provider": "system", "result": "ok"}
	if d := s1.value("ezfs_key_unwraps_total", unwrapOK) - s0.value("ezfs_key_unwraps_total", unwrapOK); d < 1 {
		t.Errorf("no unwrap counted (%v)", d)
	}
	if s1.value("ezfs_key_cache_size", nil) < 1 || s1.value("ezfs_key_cache_lookups_total", nil) < 1 {
		t.Errorf("key cache: size %v, lookups %v", s1.value("ezfs_key_cache_size", nil), s1.value("ezfs_key_cache_lookups_total", nil))
	}
	// A second file under the cached key: a hit, no unwrap.
	if err := os.WriteFile(filepath.Join(zone, "g"), []byte("more"), 0o644); err != nil {
		t.Fatal(err)
	}
	s2 := scrapeMetrics(t, sock)
	if s2.value("ezfs_key_cache_hits_total", nil) <= s1.value("ezfs_key_cache_hits_total", nil) {
		t.Errorf("cache hits did not move: %v -> %v", s1.value("ezfs_key_cache_hits_total", nil), s2.value("ezfs_key_cache_hits_total", nil))
	}
	if s2.value("ezfs_key_unwraps_total", nil) != s1.value("ezfs_key_unwraps_total", nil) {
		t.Errorf("a cached key was unwrapped again")
	}

	// A flipped byte in the middle of the ciphertext: the read fails, the counter moves.
	bf := e.backingOf(f)
	raw, err := os.ReadFile(bf)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)/2] ^= 0x40
	if err := os.WriteFile(bf, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	uncached(t, f)
	if _, err := os.ReadFile(f); err == nil {
		t.Fatal("a flipped block read without error")
	}
	s3 := scrapeMetrics(t, sock)
	if d := s3.value("ezfs_block_auth_failures_total", zl) - s2.value("ezfs_block_auth_failures_total", zl); d < 1 {
		t.Errorf("block auth failures did not move (%v)", d)
	}
	if s3.value("ezfs_fuse_requests_total", map[string]string{"op": "read", "result": "error"}) < 1 {
		t.Error("the failed read is not counted as an error")
	}
	if err := os.Remove(f); err != nil {
		t.Fatal(err)
	}

	// Reencrypt progress.
	for i := 0; i < 20; i++ {
		if err := os.WriteFile(filepath.Join(zone, "r"+string(rune('a'+i))), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e.run("key", "roll", "--mount", e.mnt, "k")
	e.run("reencrypt", "start", "--wait", zone)
	s4 := scrapeMetrics(t, sock)
	done := map[string]string{"zone": zid, "state": "Completed"}
	if v := s4.value("ezfs_reencrypt_files_done", done); v < 21 {
		t.Errorf("ezfs_reencrypt_files_done{state=Completed} = %v, want >= 21", v)
	}
	if v := s4.value("ezfs_reencrypt_failures", done); v != 0 {
		t.Errorf("reencrypt failures = %v", v)
	}
	var st []control.JobStatus
	decodeJSON(t, e.run("reencrypt", "status", "--json", zone), &st)
	if len(st) != 1 || float64(st[0].Reencrypted+st[0].AlreadyCurrent) != s4.value("ezfs_reencrypt_files_done", done) {
		t.Errorf("metrics and reencrypt status disagree: %+v", st)
	}
	for name := range s4 {
		if !strings.HasPrefix(name, "ezfs_") {
			t.Errorf("metric %s without the ezfs_ prefix", name)
		}
	}
	e.umount()
	if _, err := os.Stat(sock); err == nil {
		t.Error("the metrics socket stays after umount")
	}
}
