package zones_test

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/ezfs/ezfs/fs"
	"github.com/ezfs/ezfs/keystore"
	"github.com/ezfs/ezfs/zones"
	"github.com/ezfs/ezfs/zones/zonetest"
)

// BenchmarkReencrypt re-wraps a zone of EZFS_BENCH_FILES files (default 100,000)
// written straight to a backing dir in the zone format, and reports files per second.
// EZFS_BENCH_WORKERS sets the number of parallel workers (default 2).
// make bench-reencrypt runs it.
func BenchmarkReencrypt(b *testing.B) {
	files := zonetest.Files(100000)
	fx := zonetest.New(b, "bench")
	fx.AddFiles(b, files, nil)
	store, keys, z := fx.Store, fx.Keys, fx.Zone
	reg := zones.NewRegistry()
	reg.Add(zones.Entry{Zone: z, Path: fx.ZonePath})
	fsys, err := fs.New(fs.Options{Backing: fx.Backing, Keys: keys, Zones: reg})
	if err != nil {
		b.Fatal(err)
	}
	r := zones.NewReencryptor(fsys.Root(), keys, fsys, nil, testLogger(b))
	if s := os.Getenv("EZFS_BENCH_WORKERS"); s != "" {
		r.Workers, _ = strconv.Atoi(s)
	}
	defer r.Close()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		if _, err := store.RollZoneKey("bench"); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if _, err := r.Start(*reg.At(fx.ZonePath), 0); err != nil {
			b.Fatal(err)
		}
		var j zones.JobInfo
		for {
			jobs, err := r.Jobs()
			if err != nil {
				b.Fatal(err)
			}
			if j = jobs[0]; !j.Active() {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		elapsed := time.Since(start)
		if j.State != keystore.JobCompleted || j.Rewrapped != int64(files) {
			b.Fatalf("job %s: %d of %d re-encrypted (%s)", j.State, j.Rewrapped, files, j.Reason)
		}
		b.ReportMetric(float64(files)/elapsed.Seconds(), "files/s")
	}
}
