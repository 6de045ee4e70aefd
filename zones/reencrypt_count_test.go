package zones

import "testing"

// TestApplyLinkCounts: the names of a hard-linked inode are processed in parallel, so
// the first name in walk order may find the inode current because a later name
// rewrapped it meanwhile: the inode counts once, as rewrapped, whatever the order.
func TestApplyLinkCounts(t *testing.T) {
	inode := [2]uint64{1, 42}
	for _, c := range []struct {
		name          string
		first, second outcome
	}{
		{"rewrapped through the first name", rewrapped, current},
		{"rewrapped through a later name", current, rewrapped},
	} {
		ru := &run{failed: map[string]string{}, seen: map[[2]uint64]outcome{}}
		ru.apply(result{item: item{rel: "a"}, outcome: c.first, version: 2, devIno: inode, nlink: 2}, false)
		ru.apply(result{item: item{rel: "b"}, outcome: c.second, version: 2, devIno: inode, nlink: 2}, false)
		j := ru.job
		if j.Files != 1 || j.Links != 1 || j.Rewrapped != 1 || j.Current != 0 || j.Versions[2] != 1 {
			t.Errorf("%s: files %d links %d rewrapped %d current %d versions %v; want 1 1 1 0, @2: 1",
				c.name, j.Files, j.Links, j.Rewrapped, j.Current, j.Versions)
		}
	}
}
