// Package scripts holds the repository's shell scripts; its tests check the parts of
// them whose mistakes would go unnoticed, such as the arithmetic of the bench report.
package scripts

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBenchTable: medians (odd and even sample counts), ratios in the zone's favour for
// rates (zone ÷ other) and for times (other ÷ zone), the spread of each figure, and a
// column of figures and one of ratios for each gocryptfs the run had, named by its label.
func TestBenchTable(t *testing.T) {
	// Every figure is 1 except those the assertions below look at.
	figures := map[string][]string{
		"write zone":  {"300", "100", "200"},
		"write pass":  {"400"},
		"write gcfs":  {"100"},
		"read zone":   {"1", "4", "2", "3"},
		"ls zone":     {"2"},
		"ls gcfs":     {"3"},
		"ls dpass":    {"1.5"},
		"write gcfs2": {"400"},
		"cat zone":    {"2"},
		"cat gcfs2":   {"5"},
	}
	var fixture strings.Builder
	for _, w := range []string{"write", "read", "untar", "ls", "cat", "rm", "create", "randread", "randwrite"} {
		for _, target := range []string{"plain", "pass", "dpass", "zone", "gcfs", "gcfs2"} {
			values, ok := figures[w+" "+target]
			if !ok {
				values = []string{"1"}
			}
			for _, v := range values {
				fixture.WriteString(w + " " + target + " " + v + "\n")
			}
		}
	}
	fixture.WriteString("rss zone 40\nrss zone 60\nrss zone 50\n")
	fixture.WriteString("label gcfs gocryptfs 2.3\nlabel gcfs2 gocryptfs 2.6.1\n")
	results := filepath.Join(t.TempDir(), "results")
	if err := os.WriteFile(results, []byte(fixture.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("bash", "bench-table.sh", results).CombinedOutput()
	if err != nil {
		t.Fatalf("bench-table.sh: %v\n%s", err, out)
	}
	for _, want := range []string{
		"| workload | unit | plain disk | ezfs passthrough (kernel) | ezfs passthrough (daemon) | ezfs zone | gocryptfs 2.3 | gocryptfs 2.6.1 | zone vs ezfs passthrough (kernel) | zone vs ezfs passthrough (daemon) | zone vs gocryptfs 2.3 | zone vs gocryptfs 2.6.1 |",
		// write: zone median 200; 200/400, 200/1, 200/100, 200/400
		"| write | MiB/s | 1.00 | 400.00 | 1.00 | 200.00 | 100.00 | 400.00 | 0.50× | 200.00× | 2.00× | 0.50× |",
		// read: four samples, median 2.5
		"| read | MiB/s | 1.00 | 1.00 | 1.00 | 2.50 | 1.00 | 1.00 | 2.50× | 2.50× | 2.50× | 2.50× |",
		// ls is a time: gocryptfs 3 s / zone 2 s = 1.5× better, daemon 1.5 s / 2 s = 0.75×
		"| ls | s | 1.00 | 1.00 | 1.50 | 2.00 | 3.00 | 1.00 | 0.50× | 0.75× | 1.50× | 0.50× |",
		"| cat | s | 1.00 | 1.00 | 1.00 | 2.00 | 1.00 | 5.00 | 0.50× | 0.50× | 0.50× | 2.50× |",
		"| write | 1–1 | 400–400 | 1–1 | 100–300 | 100–100 | 400–400 |",
		"| read | 1–1 | 1–1 | 1–1 | 1–4 | 1–1 | 1–1 |",
		"| ls | 1.00–1.00 | 1.00–1.00 | 1.50–1.50 | 2.00–2.00 | 3.00–3.00 | 1.00–1.00 |",
		"peak RSS during the streaming write into the zone: 50 MiB (median)",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}
