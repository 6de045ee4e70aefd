package main

import (
	"testing"
	"time"
)

func TestParseRetention(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration // 0: refused
	}{
		{"7d", 7 * 24 * time.Hour},
		{"1d12h", 36 * time.Hour},
		{"36h", 36 * time.Hour},
		{"90s", 90 * time.Second},
		{"0d", 0}, {"", 0}, {"-1h", 0}, {"xd", 0}, {"7days", 0}, {"d", 0},
	} {
		got, err := parseRetention(c.in)
		if c.want == 0 {
			if err == nil {
				t.Errorf("%q: %v, want an error", c.in, got)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%q: %v %v, want %v", c.in, got, err, c.want)
		}
	}
}
