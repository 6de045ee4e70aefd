package zones

import (
	"errors"
	"testing"
)

func TestCheckNew(t *testing.T) {
	r := NewRegistry()
	r.Add(Entry{Zone: &Zone{ID: [16]byte{1}, Key: "k"}, Path: "a/b", Dev: 1, Ino: 10})
	r.Add(Entry{Zone: &Zone{ID: [16]byte{2}, Key: "k"}, Path: "c", Dev: 1, Ino: 20})
	for _, c := range []struct {
		path string
		want error
	}{
		{"a/b", ErrIsZone},
		{"/a/b/", ErrIsZone},
		{"a/b/x", ErrInsideZone},
		{"c/d/e", ErrInsideZone},
		{"a", ErrAboveZone},
		{"", ErrAboveZone},
		{"a/bb", nil},
		{"cc", nil},
		{"d", nil},
	} {
		if err := r.CheckNew(c.path); !errors.Is(err, c.want) {
			t.Errorf("CheckNew(%q) = %v, want %v", c.path, err, c.want)
		}
	}
	if e := r.Containing("a/b/x/y"); e == nil || e.Path != "a/b" {
		t.Errorf("Containing: %+v", e)
	}
	if e := r.Containing("a/bb"); e != nil {
		t.Errorf("Containing a sibling with a common prefix: %+v", e)
	}
	// A rename of an ancestor moves every zone below it, and only those.
	if moved := r.Renamed("a", "x/a"); len(moved) != 1 || moved[0].Path != "x/a/b" {
		t.Errorf("Renamed(a, x/a) moved %+v", moved)
	}
	if r.At("a/b") != nil || r.At("x/a/b") == nil || r.At("c") == nil {
		t.Error("Renamed did not move the zone below the directory")
	}
	if moved := r.Renamed("x/a/bb", "y"); len(moved) != 0 {
		t.Errorf("Renamed of a sibling with a common prefix moved %+v", moved)
	}
	if e := r.ByInode(1, 20); e == nil || e.Path != "c" {
		t.Errorf("ByInode(1, 20) = %+v", e)
	}
	r.Remove([16]byte{2})
	if r.ByInode(1, 20) != nil || r.At("c") != nil {
		t.Error("Remove left the zone")
	}
}

func TestMarker(t *testing.T) {
	z := &Zone{ID: [16]byte{1, 2, 3}, Key: "finance"}
	got, err := ParseMarker(z.Marker())
	if err != nil || *got != *z {
		t.Fatalf("marker round trip: %+v %v", got, err)
	}
	for _, bad := range []string{"", "v2 00 k", "v1 zz k", "v1 0102 k extra"} {
		if _, err := ParseMarker([]byte(bad)); err == nil {
			t.Errorf("ParseMarker(%q) accepted", bad)
		}
	}
}
