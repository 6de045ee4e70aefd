package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ezfs/ezfs/keystore"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are what --metrics ADDR serves, in Prometheus' text format. Counters are
// counted where things happen (fs.Metrics, the provider wrapper, zones.Keys.OnLookup);
// gauges are read at scrape time from the keyring, the keystore and the reencryptor.
type metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	readB     *prometheus.CounterVec
	writtenB  *prometheus.CounterVec
	authFail  *prometheus.CounterVec
	unwraps   *prometheus.CounterVec
	lookups   prometheus.CounterFunc
	nLookups  atomicCount
	nUnwraps  atomicCount
	lastHits  atomicCount
	collector *stateCollector
}

func newMetrics(d *daemon) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ezfs_fuse_requests_total",
		Help: "FUSE requests answered, by operation and result (ok or error)."}, []string{"op", "result"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ezfs_fuse_request_duration_seconds",
		Help: "Time to answer a FUSE request, by operation.", Buckets: prometheus.ExponentialBuckets(0.00001, 4, 10)}, []string{"op"})
	m.readB = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ezfs_zone_read_bytes_total",
		Help: "Plaintext bytes read from zone files, by zone ID."}, []string{"zone"})
	m.writtenB = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ezfs_zone_written_bytes_total",
		Help: "Plaintext bytes written to zone files, by zone ID."}, []string{"zone"})
	m.authFail = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ezfs_block_auth_failures_total",
		Help: "Blocks or records of zone files that failed authentication (tampered or torn), by zone ID."}, []string{"zone"})
	m.unwraps = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ezfs_key_unwraps_total",
		Help: "Unwraps (RSA-OAEP decryptions) asked of a main key's provider, by main key, provider and result (ok or the error code)."},
		[]string{"main_key", "provider", "result"})
	m.lookups = prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "ezfs_key_cache_lookups_total",
		Help: "Zone key versions file operations needed."}, func() float64 { return float64(m.nLookups.load()) })
	hits := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "ezfs_key_cache_hits_total",
		Help: "Zone key lookups served from the cache, without an unwrap (lookups less unwraps, never decreasing)."},
		func() float64 {
			h := m.nLookups.load() - m.nUnwraps.load()
			if h < m.lastHits.load() {
				h = m.lastHits.load()
			}
			m.lastHits.store(h)
			return float64(h)
		})
	version := "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		version = bi.Main.Version
	}
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ezfs_build_info",
		Help: "The daemon's build: version and Go version (always 1)."}, []string{"version", "goversion"})
	build.WithLabelValues(version, runtime.Version()).Set(1)
	m.collector = &stateCollector{d: d}
	m.reg.MustRegister(m.requests, m.latency, m.readB, m.writtenB, m.authFail, m.unwraps, m.lookups, hits, build, m.collector)
	return m
}

// ZoneRead, ZoneWrite, AuthFailure and Request implement fs.Metrics.
func (m *metrics) ZoneRead(zone string, n int)  { m.readB.WithLabelValues(zone).Add(float64(n)) }
func (m *metrics) ZoneWrite(zone string, n int) { m.writtenB.WithLabelValues(zone).Add(float64(n)) }
func (m *metrics) AuthFailure(zone string)      { m.authFail.WithLabelValues(zone).Inc() }
func (m *metrics) Request(op string, d time.Duration, ok bool) {
	result := "ok"
	if !ok {
		result = "error"
	}
	m.requests.WithLabelValues(op, result).Inc()
	m.latency.WithLabelValues(op).Observe(d.Seconds())
}

// opener counts the unwraps of the providers open returns.
func (m *metrics) opener(open keystore.Opener) keystore.Opener {
	return func(ctx context.Context, mk *keystore.MainKey) (keystore.Provider, error) {
		p, err := open(ctx, mk)
		if err != nil {
			return nil, err
		}
		c := &countedProvider{Provider: p, m: m}
		if r, ok := p.(keystore.Rotating); ok {
			return &countedRotating{countedProvider: c, r: r}, nil
		}
		return c, nil
	}
}

type countedProvider struct {
	keystore.Provider
	m *metrics
}

func (c *countedProvider) Decrypt(ctx context.Context, mk *keystore.MainKey, ct []byte) ([]byte, error) {
	out, err := c.Provider.Decrypt(ctx, mk, ct)
	c.m.nUnwraps.add(1)
	c.m.unwraps.WithLabelValues(mk.Name, mk.Provider, string(Classify(err))).Inc()
	return out, err
}

// countedRotating keeps the optional keystore.Rotating of a provider visible.
type countedRotating struct {
	*countedProvider
	r keystore.Rotating
}

func (c *countedRotating) HasNewer(ctx context.Context, mk *keystore.MainKey) (bool, error) {
	return c.r.HasNewer(ctx, mk)
}

// stateCollector reads the gauges at scrape time.
type stateCollector struct{ d *daemon }

var (
	descCache    = prometheus.NewDesc("ezfs_key_cache_size", "Unwrapped zone key versions held in memory.", nil, nil)
	descProvider = prometheus.NewDesc("ezfs_provider_up", "Whether the provider of an active main key version answered when last asked (1) or not (0).",
		[]string{"main_key", "version", "provider"}, nil)
	descZone    = prometheus.NewDesc("ezfs_zone_info", "A registered zone: its ID, path and key (always 1).", []string{"zone", "path", "key"}, nil)
	descReDone  = prometheus.NewDesc("ezfs_reencrypt_files_done", "Files the zone's last reencryption job re-encrypted or found current.", []string{"zone", "path", "state"}, nil)
	descReTotal = prometheus.NewDesc("ezfs_reencrypt_files_estimate", "Files the zone's last reencryption job expects in all.", []string{"zone", "path", "state"}, nil)
	descReFail  = prometheus.NewDesc("ezfs_reencrypt_failures", "Files the zone's last reencryption job could not re-encrypt.", []string{"zone", "path", "state"}, nil)
)

func (s *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCache, descProvider, descZone, descReDone, descReTotal, descReFail} {
		ch <- d
	}
}

func (s *stateCollector) Collect(ch chan<- prometheus.Metric) {
	d := s.d
	ch <- prometheus.MustNewConstMetric(descCache, prometheus.GaugeValue, float64(d.ring.Cached()))
	if mks, err := d.store.MainKeys(); err == nil {
		for _, mk := range mks {
			if mk.State != keystore.StateActive {
				continue
			}
			up := 0.0
			if h, ok := d.ring.Health(mk.Ref()); ok && h.OK {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(descProvider, prometheus.GaugeValue, up, mk.Name, fmt.Sprint(mk.Version), mk.Provider)
		}
	}
	for _, e := range d.registry.List() {
		ch <- prometheus.MustNewConstMetric(descZone, prometheus.GaugeValue, 1, e.Zone.IDString(), "/"+e.Path, e.Zone.Key)
	}
	if d.reenc == nil {
		return
	}
	jobs, err := d.reenc.Jobs()
	if err != nil {
		return
	}
	// The newest job of each zone.
	last := map[string]int{}
	for i, j := range jobs {
		if k, ok := last[j.ZoneID]; !ok || j.Submitted.After(jobs[k].Submitted) {
			last[j.ZoneID] = i
		}
	}
	for _, i := range last {
		j := jobs[i]
		labels := []string{j.ZoneID, "/" + j.ZonePath, j.State}
		ch <- prometheus.MustNewConstMetric(descReDone, prometheus.GaugeValue, float64(j.Rewrapped+j.Current), labels...)
		ch <- prometheus.MustNewConstMetric(descReTotal, prometheus.GaugeValue, float64(j.Total), labels...)
		ch <- prometheus.MustNewConstMetric(descReFail, prometheus.GaugeValue, float64(j.Failures), labels...)
	}
}

// serveMetrics serves m on addr: a path (a Unix socket, mode 0600) or HOST:PORT. The
// returned function stops it.
func serveMetrics(addr string, m *metrics) (func(), error) {
	var ln net.Listener
	var err error
	if strings.HasPrefix(addr, "/") {
		os.Remove(addr)
		ln, err = net.Listen("unix", addr)
		if err == nil {
			err = os.Chmod(addr, 0o600)
		}
	} else {
		ln, err = net.Listen("tcp", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("--metrics %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(os.Stderr, "ezfs: metrics: %v\n", err)
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if strings.HasPrefix(addr, "/") {
			os.Remove(addr)
		}
	}, nil
}

// atomicCount is an int64 counter.
type atomicCount struct{ v atomic.Int64 }

func (a *atomicCount) add(n int64)   { a.v.Add(n) }
func (a *atomicCount) load() int64   { return a.v.Load() }
func (a *atomicCount) store(n int64) { a.v.Store(n) }
