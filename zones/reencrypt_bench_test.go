package zones_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/ezfs/ezfs/fs"
	"github.com/ezfs/ezfs/keystore"
	"github.com/ezfs/ezfs/zones"
	"golang.org/x/sys/unix"
)

// BenchmarkReencrypt re-wraps a zone of EZFS_BENCH_FILES files (default 100,000)
// written straight to a backing dir in the zone format, and reports files per second.
// EZFS_BENCH_WORKERS sets the number of parallel workers (default 2).
// make bench-reencrypt runs it.
func BenchmarkReencrypt(b *testing.B) {
	files := 100000
	if s := os.Getenv("EZFS_BENCH_FILES"); s != "" {
		files, _ = strconv.Atoi(s)
	}
	backing := b.TempDir()
	ksDir := filepath.Join(backing, ".ezfs")
	if _, err := keystore.InitSystem(ksDir, []byte("bench")); err != nil {
		b.Fatal(err)
	}
	store, err := keystore.Open(ksDir)
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	mks, _ := store.MainKeys()
	sys, err := keystore.UnlockSystem(mks, []byte("bench"))
	if err != nil {
		b.Fatal(err)
	}
	ring := keystore.NewKeyring(store, []keystore.Provider{sys}, nil, time.Hour)
	defer ring.Close()
	keys := &zones.Keys{Ring: ring}
	if _, err := store.CreateZoneKey("bench", ""); err != nil {
		b.Fatal(err)
	}
	z := &zones.Zone{ID: [16]byte{7}, Key: "bench"}
	root := filepath.Join(backing, "zone")
	ctx := context.Background()
	for i := 0; i < files; i++ {
		dir := filepath.Join(root, fmt.Sprintf("d%03d", i%1000))
		if i < 1000 {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		dek, rec, _, err := keys.NewFileKey(ctx, z)
		if err != nil {
			b.Fatal(err)
		}
		clear(dek)
		p := filepath.Join(dir, fmt.Sprintf("f%06d", i))
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			b.Fatal(err)
		}
		if err := unix.Setxattr(p, zones.XattrEDEK, rec, 0); err != nil {
			b.Fatal(err)
		}
	}
	reg := zones.NewRegistry()
	reg.Add(zones.Entry{Zone: z, Path: "zone"})
	fsys, err := fs.New(fs.Options{Backing: backing, Keys: keys, Zones: reg})
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
		if _, err := r.Start(*reg.At("zone"), 0); err != nil {
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
