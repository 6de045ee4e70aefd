package fsck_test

import (
	"context"
	"os"
	"strconv"
	"testing"

	"github.com/ezfs/ezfs/fsck"
	"github.com/ezfs/ezfs/keystore"
	"github.com/ezfs/ezfs/keystore/providers"
	"github.com/ezfs/ezfs/zones/zonetest"
)

// BenchmarkFsck checks a zone of EZFS_BENCH_FILES files (default 100,000) of 1,000
// bytes each, written straight to a backing dir in the zone format (as
// BenchmarkReencrypt), and reports files per second, without and with --full.
// EZFS_BENCH_WORKERS sets the number of parallel workers (default 4). make bench-fsck
// runs it.
func BenchmarkFsck(b *testing.B) {
	files := zonetest.Files(100000)
	fx := zonetest.New(b, "bench")
	fx.AddFiles(b, files, make([]byte, 1000))
	fx.Close()
	workers, _ := strconv.Atoi(os.Getenv("EZFS_BENCH_WORKERS"))
	for _, full := range []bool{false, true} {
		name := "edeks"
		if full {
			name = "full"
		}
		b.Run(name, func(b *testing.B) {
			for n := 0; n < b.N; n++ {
				rep := runBench(b, fx, full, workers)
				if rep.Files != int64(files) || len(rep.Problems) != 0 {
					b.Fatalf("%d of %d files checked, problems %v", rep.Files, files, rep.Problems)
				}
				b.ReportMetric(rep.Rate, "files/s")
			}
		})
	}
}

func runBench(b *testing.B, fx *zonetest.Fixture, full bool, workers int) *fsck.Report {
	rep, err := fsck.Run(context.Background(), fsck.Options{Backing: fx.Backing, Keystore: fx.KeystoreDir, Full: full, Workers: workers,
		Secrets: func([]*keystore.MainKey) (providers.Secrets, error) {
			return providers.Secrets{Passphrase: []byte(zonetest.Passphrase)}, nil
		}})
	if err != nil {
		b.Fatal(err)
	}
	return rep
}
