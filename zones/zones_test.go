package zones

import (
	"errors"
	"testing"
)

func TestCheckNew(t *testing.T) {
	r := NewRegistry()
	r.Add(&Zone{Key: "k"}, "a/b")
	r.Add(&Zone{Key: "k"}, "c")
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
	r.Move("c", "moved/c")
	if r.At("c") != nil || r.At("moved/c") == nil {
		t.Error("Move did not move")
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
