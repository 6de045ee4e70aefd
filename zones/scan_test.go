package zones_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ezfs/ezfs/backing"
	"github.com/ezfs/ezfs/zones"
	"github.com/ezfs/ezfs/zones/zonetest"
	"golang.org/x/sys/unix"
)

// TestScanRefusesUnreadableEDEKs: a scan counts files by key version, and refuses
// (ErrDamaged, naming the count) once an EDEK does not parse, since that file may be
// under any key.
func TestScanRefusesUnreadableEDEKs(t *testing.T) {
	f := zonetest.New(t, "k")
	f.AddFiles(t, 3, []byte("data"))
	root, err := backing.OpenRoot(f.Backing)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	zs := []zones.Entry{{Zone: f.Zone, Path: f.ZonePath}}
	for _, whole := range []bool{false, true} {
		refs, err := zones.ScanRefs(context.Background(), root, zs, whole)
		if err != nil || refs.Of("k", 1) != 3 {
			t.Fatalf("whole=%v: %v %+v", whole, err, refs)
		}
	}
	p := filepath.Join(f.Backing, f.ZonePath, "d000", "f000000")
	// Raw, by path, on purpose: the test plays someone writing the backing disk.
	if err := unix.Setxattr(p, zones.XattrEDEK, []byte("not an EDEK"), 0); err != nil {
		t.Fatal(err)
	}
	for _, whole := range []bool{false, true} {
		_, err := zones.ScanRefs(context.Background(), root, zs, whole)
		if !errors.Is(err, zones.ErrDamaged) || !strings.Contains(err.Error(), "1 files") {
			t.Errorf("whole=%v with an unreadable EDEK: %v; want ErrDamaged naming 1 file", whole, err)
		}
	}
}
