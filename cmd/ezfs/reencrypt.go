package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ezfs/ezfs/control"
	"github.com/ezfs/ezfs/daemon"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

func reencryptCommand() *cli.Command {
	return &cli.Command{
		Name: "reencrypt", Usage: "re-wrap every file's data key with the newest zone key version",
		Subcommands: []*cli.Command{
			{Name: "start", Usage: "start a job on a zone", ArgsUsage: "ZONE",
				Flags: []cli.Flag{jsonFlag,
					&cli.BoolFlag{Name: "wait", Usage: "follow the job to its end; exit non-zero if it fails or is canceled"},
					&cli.Float64Flag{Name: "rate", Usage: "at most this many files per second (0: no limit)"}},
				Action: cmdReencryptStart},
			{Name: "cancel", Usage: "stop a zone's job, keeping what was done", ArgsUsage: "ZONE", Flags: []cli.Flag{jsonFlag}, Action: cmdReencryptCancel},
			{Name: "status", Usage: "show jobs (of one zone, or all)", ArgsUsage: "[ZONE]",
				Flags:  []cli.Flag{jsonFlag, mountFlag, &cli.BoolFlag{Name: "failures", Usage: "list each failed file with its reason"}},
				Action: cmdReencryptStatus},
		},
	}
}

// zoneArg finds the daemon serving the ZONE argument and the zone's path in the mount.
func zoneArg(c *cli.Context) (string, string, error) {
	if err := exactArgs(c, "ZONE"); err != nil {
		return "", "", err
	}
	return socketForPath(c.Args().First())
}

func cmdReencryptStart(c *cli.Context) error {
	if c.Float64("rate") < 0 {
		return daemon.UsageError("--rate must not be negative")
	}
	sock, rel, err := zoneArg(c)
	if err != nil {
		return err
	}
	var js control.JobStatus
	if err := control.Call(sock, control.OpReencryptStart, control.ReencryptArgs{Path: rel, Rate: c.Float64("rate")}, &js); err != nil {
		return err
	}
	if !c.Bool("wait") {
		if c.Bool("json") {
			return printJSON(js)
		}
		fmt.Printf("reencryption of %s submitted: target %s@%d\n", js.Zone, js.Key, js.Target)
		return nil
	}
	return waitJob(c, sock, rel)
}

// waitJob follows a job: a progress bar on a terminal, a line every few seconds else.
func waitJob(c *cli.Context, sock, rel string) error {
	tty := term.IsTerminal(int(os.Stdout.Fd())) && !c.Bool("json")
	lastLine := time.Time{}
	for {
		var jobs []control.JobStatus
		if err := control.Call(sock, control.OpReencryptStatus, control.ReencryptArgs{Path: rel}, &jobs); err != nil {
			if tty {
				fmt.Println()
			}
			return fmt.Errorf("lost the daemon while waiting (the job resumes at the next mount): %w", err)
		}
		j := jobs[0]
		done := j.State != "Submitted" && j.State != "Processing"
		switch {
		case tty:
			fmt.Printf("\r%s", progressBar(j))
		case done || time.Since(lastLine) >= 2*time.Second:
			if !c.Bool("json") {
				fmt.Println(progressLine(j))
			}
			lastLine = time.Now()
		}
		if done {
			if tty {
				fmt.Println()
			}
			if c.Bool("json") {
				if err := printJSON(j); err != nil {
					return err
				}
			} else {
				printJob(j, false)
			}
			switch j.State {
			case "Completed":
				return nil
			case "Canceled":
				return errors.New("the job was canceled")
			}
			return fmt.Errorf("the job failed: %s", j.Reason)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func progressBar(j control.JobStatus) string {
	const width = 30
	n := int(j.Percent / 100 * width)
	bar := strings.Repeat("=", n) + strings.Repeat(" ", width-n)
	return fmt.Sprintf("[%s] %5.1f%%  %s", bar, j.Percent, progressLine(j))
}

func progressLine(j control.JobStatus) string {
	upgraded := ""
	if j.UpgradedV1 > 0 {
		upgraded = fmt.Sprintf(" (%d from EDEK format v1)", j.UpgradedV1)
	}
	s := fmt.Sprintf("%s %s: %d re-encrypted%s, %d current, %d failures, %.0f files/s",
		j.Zone, j.State, j.Reencrypted, upgraded, j.AlreadyCurrent, j.Failures, j.FilesPerSecond)
	if j.ETASeconds > 0 {
		s += fmt.Sprintf(", ETA %s", (time.Duration(j.ETASeconds) * time.Second).String())
	}
	if j.Pass > 0 {
		s += fmt.Sprintf(", sweep %d", j.Pass)
	}
	return s
}

func cmdReencryptCancel(c *cli.Context) error {
	sock, rel, err := zoneArg(c)
	if err != nil {
		return err
	}
	var js control.JobStatus
	if err := control.Call(sock, control.OpReencryptCancel, control.ReencryptArgs{Path: rel}, &js); err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(js)
	}
	fmt.Printf("reencryption of %s canceled: %d files re-encrypted so far\n", js.Zone, js.Reencrypted)
	return nil
}

func cmdReencryptStatus(c *cli.Context) error {
	if c.NArg() > 1 {
		return daemon.UsageError("reencrypt status takes at most one ZONE")
	}
	var sock string
	args := control.ReencryptArgs{All: true}
	var err error
	if c.NArg() == 1 {
		sock, args.Path, err = socketForPath(c.Args().First())
		args.All = false
	} else {
		sock, err = socketFor(c)
	}
	if err != nil {
		return err
	}
	var jobs []control.JobStatus
	if err := control.Call(sock, control.OpReencryptStatus, args, &jobs); err != nil {
		return err
	}
	if !c.Bool("failures") {
		for i := range jobs {
			jobs[i].FailedFiles = nil
		}
	}
	if c.Bool("json") {
		return printJSON(jobs)
	}
	if len(jobs) == 0 {
		fmt.Println("no reencryption jobs")
	}
	for i, j := range jobs {
		if i > 0 {
			fmt.Println()
		}
		printJob(j, c.Bool("failures"))
	}
	return nil
}

func printJob(j control.JobStatus, failures bool) {
	completed := "-"
	if j.Completed != nil {
		completed = ts(*j.Completed)
	}
	w := table()
	fmt.Fprintf(w, "zone:\t%s\n", j.Zone)
	fmt.Fprintf(w, "state:\t%s\n", j.State)
	fmt.Fprintf(w, "owner:\t%s\n", jobOwner(j))
	fmt.Fprintf(w, "target key version:\t%s@%d\n", j.Key, j.Target)
	fmt.Fprintf(w, "submission time:\t%s\n", ts(j.Submitted))
	fmt.Fprintf(w, "canceled:\t%v\n", j.Canceled)
	fmt.Fprintf(w, "completion time:\t%s\n", completed)
	fmt.Fprintf(w, "files:\t%d (%d more hard links to them)\n", j.Files, j.ExtraLinks)
	fmt.Fprintf(w, "files re-encrypted:\t%d\n", j.Reencrypted)
	fmt.Fprintf(w, "  from EDEK format v1:\t%d\n", j.UpgradedV1)
	fmt.Fprintf(w, "already on target:\t%d\n", j.AlreadyCurrent)
	fmt.Fprintf(w, "failures:\t%d\n", j.Failures)
	fmt.Fprintf(w, "last file checkpointed:\t%s\n", j.Checkpoint)
	fmt.Fprintf(w, "percent done:\t%.1f%%\n", j.Percent)
	fmt.Fprintf(w, "rate:\t%.0f files/s\n", j.FilesPerSecond)
	eta := "-"
	if j.ETASeconds > 0 {
		eta = (time.Duration(j.ETASeconds) * time.Second).String()
	}
	fmt.Fprintf(w, "ETA:\t%s\n", eta)
	if j.Reason != "" {
		fmt.Fprintf(w, "reason:\t%s\n", j.Reason)
	}
	w.Flush()
	if failures {
		for _, f := range j.FailedFiles {
			fmt.Printf("  FAILED %s%s: %s\n", j.Zone, "/"+f.Path, f.Reason)
		}
	}
}

// jobOwner is the daemon that runs (or ended) job j, for display.
func jobOwner(j control.JobStatus) string {
	switch {
	case j.Owner != "":
		return j.Owner
	case j.State == "Submitted" || j.State == "Processing":
		return "none (a daemon of the keystore takes the job over)"
	}
	return "-"
}
