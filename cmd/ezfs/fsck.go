package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"text/tabwriter"

	"github.com/ezfs/ezfs/control"
	"github.com/ezfs/ezfs/daemon"
	"github.com/ezfs/ezfs/fsck"
	"github.com/ezfs/ezfs/keystore"
	"github.com/ezfs/ezfs/keystore/providers"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

// fsck's exit codes, as fsck(8)'s: not the classes of exitCodesHelp.
const (
	fsckProblems      = 1
	fsckCouldNotCheck = 2
)

const fsckExitHelp = `fsck checks an unmounted backing directory: every zone's marker against the keystore, every
zone file's EDEK (one unwrap per zone key version), header and tail, with --full every block,
files stored in the clear inside zones, and zone keys or versions no file uses.
--repair cuts torn tails to their last intact block and restores missing zone markers;
nothing else, and it never deletes a file.

EXIT STATUS: 0 clean (or every problem repaired), 1 problems found, 2 could not check
(bad arguments, backing mounted or keystore locked, a key provider unavailable or a
credential refused; the "code" of the --json error says which).`

// couldNotCheck marks a failure of fsck: it exits fsckCouldNotCheck, whatever its class.
type couldNotCheck struct{ err error }

func (e *couldNotCheck) Error() string { return e.err.Error() }
func (e *couldNotCheck) Unwrap() error { return e.err }

func fsckCommand() *cli.Command {
	return &cli.Command{
		Name: "fsck", Usage: "check an unmounted backing directory (--repair: mend what is safe)", ArgsUsage: "BACKING",
		Description: fsckExitHelp,
		Flags: []cli.Flag{keystoreFlag, passFileFlag, pinFileFlag, jsonFlag,
			&cli.BoolFlag{Name: "full", Usage: "authenticate every block of every file (reads all the data)"},
			&cli.BoolFlag{Name: "repair", Usage: "cut torn tails and restore missing zone markers; never deletes a file"}},
		Action: func(c *cli.Context) error {
			if err := cmdFsck(c); err != nil {
				return &couldNotCheck{err}
			}
			return nil
		},
	}
}

func cmdFsck(c *cli.Context) error {
	if err := exactArgs(c, "BACKING"); err != nil {
		return err
	}
	b, err := backingDir(c.Args().First())
	if err != nil {
		return err
	}
	ks, err := keystoreDir(c, b)
	if err != nil {
		return err
	}
	if mnts, err := control.Mounts(); err == nil {
		for _, m := range mnts {
			if m.Backing == b {
				return daemon.Reword(keystore.ErrLocked, "%s is mounted at %s: unmount it before fsck", b, m.Mountpoint)
			}
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	o := fsck.Options{Backing: b, Keystore: ks, Full: c.Bool("full"), Repair: c.Bool("repair"),
		Secrets: func(mks []*keystore.MainKey) (providers.Secrets, error) { return mainKeySecrets(c, mks) }}
	if term.IsTerminal(int(os.Stderr.Fd())) {
		o.Progress = func(n int64, zone string) { fmt.Fprintf(os.Stderr, "\rfsck: %d files checked (in /%s)\x1b[K", n, zone) }
	}
	rep, err := fsck.Run(ctx, o)
	if o.Progress != nil {
		fmt.Fprint(os.Stderr, "\r\x1b[K")
	}
	if err != nil {
		return err
	}
	if c.Bool("json") {
		err = printJSON(rep)
	} else {
		printFsck(rep)
	}
	if err != nil {
		return err
	}
	if !rep.Clean() {
		fmt.Fprintf(os.Stderr, "ezfs: fsck %s: %d problems found, %d repaired\n", b, len(rep.Problems), rep.Repaired)
		os.Exit(fsckProblems)
	}
	return nil
}

// printFsck prints the report as text: counts per zone and key version, then each
// problem on a line of its own.
func printFsck(r *fsck.Report) {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ZONE\tKEY\tFILES\tLINKS\tEMPTY\tOTHER\tNOT CHECKED\tBYTES\tVERSIONS")
	for _, z := range r.Zones {
		var names []string
		for kv := range z.Versions {
			names = append(names, kv)
		}
		sort.Strings(names)
		vs := ""
		for _, kv := range names {
			vs += fmt.Sprintf("%s:%d ", fsck.Printable(kv), z.Versions[kv])
		}
		if !z.Checked {
			vs = "(not checked)"
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", fsck.Printable("/"+z.Path), fsck.Printable(z.Key),
			z.Files, z.Links, z.Empty, z.Others, z.NotChecked, z.Bytes, vs)
	}
	w.Flush()
	fmt.Println()
	fmt.Fprintln(w, "KEY VERSION\tSTATE\tMAIN KEY\tFILES")
	for _, k := range r.Keys {
		for _, v := range k.Versions {
			latest := ""
			if v.Latest {
				latest = " (newest)"
			}
			state := v.State
			if k.State != keystore.StateActive {
				state += ", key " + k.State
			}
			fmt.Fprintf(w, "%s@%d%s\t%s\t%s\t%d\n", fsck.Printable(k.Name), v.Version, latest, state, v.MainKey, v.Files)
		}
	}
	w.Flush()
	mode := "EDEKs, headers and tails"
	if r.Full {
		mode = "every block"
	}
	fmt.Printf("\n%d files (%d more names), %d other entries, %d bytes in %d zones; %s checked; %d zone key versions unwrapped; %.1f s (%.0f files/s)\n",
		r.Files, r.Links, r.Others, r.Bytes, len(r.Zones), mode, r.Unwraps, r.Seconds, r.Rate)
	if r.NotChecked > 0 {
		fmt.Printf("%d files not checked: their key is disabled or deleted (to check them: enable the key, a deleted one after key recover, and run fsck again)\n", r.NotChecked)
	}
	if len(r.Problems) == 0 {
		fmt.Println("clean")
		return
	}
	fmt.Printf("%d problems (%d repaired):\n", len(r.Problems), r.Repaired)
	for _, p := range r.Problems {
		fmt.Println("  " + p.String())
	}
}
