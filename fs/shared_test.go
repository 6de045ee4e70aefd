package fs

import (
	"slices"
	"strings"
	"testing"

	"github.com/ezfs/ezfs/crypto"
	"github.com/ezfs/ezfs/zones"
	"golang.org/x/sys/unix"
)

func TestParseSharedStorage(t *testing.T) {
	mo, err := ParseMountOptions([]string{"allow_other,sharedstorage", "noatime"})
	if err != nil || !mo.SharedStorage || !mo.AllowOther || mo.Flags&unix.MS_NOATIME == 0 {
		t.Fatalf("ParseMountOptions: %+v %v", mo, err)
	}
	if !slices.Equal(mo.Options, []string{"allow_other", "sharedstorage", "noatime"}) {
		t.Errorf("options for display: %q", mo.Options)
	}
	if mo, _ := ParseMountOptions(nil); mo.SharedStorage {
		t.Error("sharedstorage by default")
	}
	if _, err := ParseMountOptions([]string{"sharedstorag"}); err == nil || !strings.Contains(err.Error(), "sharedstorage") {
		t.Errorf("a misspelt option: %v", err)
	}
}

// TestSharedTimeoutsAndGenerations: a sharedstorage mount lets the kernel cache
// nothing, and gives nodes of different zones (and outside zones) different
// generations; other mounts keep a second and generation 1.
func TestSharedTimeoutsAndGenerations(t *testing.T) {
	z1, z2 := &zones.Zone{ID: crypto.ZoneID{1}}, &zones.Zone{ID: crypto.ZoneID{2}}
	f := &FS{}
	if f.attrTimeout() != attrTimeout || f.nodeGen(z1) != 1 || f.nodeGen(nil) != 1 {
		t.Errorf("default mount: timeout %v, generations %d %d", f.attrTimeout(), f.nodeGen(z1), f.nodeGen(nil))
	}
	f.sharedStorage = true
	g0, g1, g2 := f.nodeGen(nil), f.nodeGen(z1), f.nodeGen(z2)
	if f.attrTimeout() != 0 || g0 != 1 || g1 == 1 || g2 == 1 || g1 == g2 || g1 != f.nodeGen(&zones.Zone{ID: z1.ID, Damaged: "x"}) {
		t.Errorf("sharedstorage: timeout %v, generations %d %d %d", f.attrTimeout(), g0, g1, g2)
	}
}
