package main

import (
	"slices"
	"testing"
)

func TestReorder(t *testing.T) {
	cmds := newApp().Commands
	for _, c := range []struct{ in, want []string }{
		{[]string{"zone", "create", "/m/z", "--key", "k"}, []string{"zone", "create", "--key", "k", "--", "/m/z"}},
		{[]string{"zone", "create", "--key=k", "/m/z", "--json"}, []string{"zone", "create", "--key=k", "--json", "--", "/m/z"}},
		{[]string{"mount", "b", "m", "-o", "allow_other", "--foreground"}, []string{"mount", "-o", "allow_other", "--foreground", "--", "b", "m"}},
		{[]string{"key", "list"}, []string{"key", "list"}},
		{[]string{"--help"}, []string{"--help"}},
	} {
		if got := reorder(cmds, c.in); !slices.Equal(got, c.want) {
			t.Errorf("reorder(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
