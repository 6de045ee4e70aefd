package fs

import (
	"testing"

	"github.com/ezfs/ezfs/crypto"
	"github.com/ezfs/ezfs/zones"
)

// TestHealZone: a node kept for a lookup takes the zone the lookup found only when it
// has that zone damaged and the new judgement serves it.
func TestHealZone(t *testing.T) {
	served := &zones.Zone{ID: crypto.ZoneID{1}, Key: "k"}
	damaged := &zones.Zone{ID: crypto.ZoneID{1}, Key: "k", Damaged: "its marker is unknown here"}
	other := &zones.Zone{ID: crypto.ZoneID{2}, Key: "k"}
	for _, c := range []struct {
		name      string
		has, seen *zones.Zone
		want      *zones.Zone
	}{
		{"damaged, now served", damaged, served, served},
		{"damaged, still damaged", damaged, &zones.Zone{ID: damaged.ID, Damaged: "x"}, damaged},
		{"damaged, another zone now", damaged, other, damaged},
		{"served, now damaged", served, damaged, served},
		{"outside zones", nil, served, nil},
		{"damaged, outside zones now", damaged, nil, damaged},
	} {
		n := &node{}
		n.zone.Store(c.has)
		n.healZone(c.seen)
		if got := n.zone.Load(); got != c.want {
			t.Errorf("%s: zone %+v, want %+v", c.name, got, c.want)
		}
	}
}
