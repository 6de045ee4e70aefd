package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ezfs/ezfs/control"
	"github.com/ezfs/ezfs/daemon"
	"github.com/urfave/cli/v2"
)

// keyLifecycleCommands are the zone key state changes of `ezfs key`.
func keyLifecycleCommands() []*cli.Command {
	common := []cli.Flag{jsonFlag, mountFlag}
	return []*cli.Command{
		{Name: "disable", Usage: "stop a zone key: its zones answer EACCES (open files too) until it is enabled",
			ArgsUsage: "NAME", Flags: common, Action: cmdKeyState(control.OpKeyDisable)},
		{Name: "enable", Usage: "make a disabled zone key serve again", ArgsUsage: "NAME", Flags: common, Action: cmdKeyState(control.OpKeyEnable)},
		{Name: "delete", Usage: "delete a zone key no zone uses; recoverable during the retention window, its name stays reserved",
			ArgsUsage: "NAME", Flags: append([]cli.Flag{&cli.StringFlag{Name: "retention", Value: "7d",
				Usage: "how long it stays recoverable before 'key purge' may destroy it (at least 1d; units d, h, m, s)"}}, common...),
			Action: cmdKeyState(control.OpKeyDelete)},
		{Name: "recover", Usage: "bring back a deleted zone key (it comes back disabled: enable it), or a retired version NAME@N",
			ArgsUsage: "NAME|NAME@N", Flags: common, Action: cmdKeyState(control.OpKeyRecover)},
		{Name: "purge", Usage: "destroy the wrapped material of a deleted zone key (before its purge date only with --force), or of a retired version NAME@N",
			ArgsUsage: "NAME|NAME@N", Flags: append([]cli.Flag{&cli.BoolFlag{Name: "force",
				Usage: "purge a key before the retention window ends, after a scan of the whole backing directory finds no file that may be under it"}}, common...),
			Action: cmdKeyState(control.OpKeyPurge)},
		{Name: "retire", Usage: "stop unwrapping a zone key version no file references (a fresh scan checks); its material stays until 'key purge NAME@N'",
			ArgsUsage: "NAME@N", Flags: common, Action: cmdKeyState(control.OpKeyRetire)},
	}
}

func cmdKeyState(op string) cli.ActionFunc {
	return func(c *cli.Context) error {
		arg := map[string]string{control.OpKeyRetire: "NAME@N", control.OpKeyPurge: "NAME|NAME@N", control.OpKeyRecover: "NAME|NAME@N"}[op]
		if arg == "" {
			arg = "NAME"
		}
		if err := exactArgs(c, arg); err != nil {
			return err
		}
		a, err := keyStateArgs(c, op)
		if err != nil {
			return err
		}
		sock, err := socketFor(c)
		if err != nil {
			return err
		}
		var ki control.KeyInfo
		if err := control.Call(sock, op, a, &ki); err != nil {
			return err
		}
		if c.Bool("json") {
			return printJSON(ki)
		}
		if a.Version != 0 {
			fmt.Printf("key %s@%d: %s\n", a.Name, a.Version, versionLine(ki, a.Version))
			return nil
		}
		fmt.Printf("key %s: %s\n", ki.Name, stateLine(ki.KeyLifecycle))
		return nil
	}
}

// keyStateArgs reads the arguments of op.
func keyStateArgs(c *cli.Context, op string) (control.KeyStateArgs, error) {
	a := control.KeyStateArgs{Name: c.Args().First(), Force: c.Bool("force")}
	var err error
	switch op {
	case control.OpKeyRetire, control.OpKeyPurge, control.OpKeyRecover:
		name, v, ok := strings.Cut(a.Name, "@")
		if !ok && op != control.OpKeyRetire {
			return a, nil
		}
		n, perr := strconv.ParseUint(v, 10, 32)
		if !ok || name == "" || perr != nil || n == 0 {
			return a, daemon.UsageError("key %s needs NAME@VERSION (e.g. logs@1), not %q", c.Command.Name, a.Name)
		}
		if a.Force {
			return a, daemon.UsageError("key %s NAME@VERSION takes no --force (the scan decides)", c.Command.Name)
		}
		a.Name, a.Version = name, uint32(n)
	case control.OpKeyDelete:
		a.Retention, err = parseRetention(c.String("retention"))
	}
	return a, err
}

// parseRetention reads a duration with days: "7d", "36h", "1d12h".
func parseRetention(s string) (time.Duration, error) {
	days, rest := time.Duration(0), s
	if d, r, ok := strings.Cut(s, "d"); ok {
		n, err := strconv.ParseUint(d, 10, 16)
		if err != nil {
			return 0, daemon.UsageError("--retention %q: not a duration (e.g. 7d, 36h)", s)
		}
		days, rest = time.Duration(n)*24*time.Hour, r
	}
	var more time.Duration
	if rest != "" {
		var err error
		if more, err = time.ParseDuration(rest); err != nil {
			return 0, daemon.UsageError("--retention %q: not a duration (e.g. 7d, 36h)", s)
		}
	}
	if days+more <= 0 {
		return 0, daemon.UsageError("--retention %q must be positive", s)
	}
	return days + more, nil
}

// stateLine says a key's state in words, with its dates.
func stateLine(l control.KeyLifecycle) string {
	switch {
	case l.Purged != nil:
		return "purged " + ts(*l.Purged) + " (its name stays reserved)"
	case l.PurgeAfter != nil:
		return fmt.Sprintf("deleted %s, recoverable ('ezfs key recover'); purge date %s", ts(*l.Deleted), ts(*l.PurgeAfter))
	case l.State == "disabled":
		return "disabled (its zones answer EACCES)"
	}
	return l.State
}

// versionLine says a version's state in words, after a change of it.
func versionLine(ki control.KeyInfo, version uint32) string {
	for _, v := range ki.Versions {
		if v.Version != version {
			continue
		}
		switch v.State {
		case "retired":
			return fmt.Sprintf("retired: never unwrapped again; its material is kept ('ezfs key purge %s@%d' destroys it, 'ezfs key recover %s@%d' brings it back)",
				ki.Name, version, ki.Name, version)
		case "purged":
			return "purged (its wrapped material is destroyed)"
		}
		return v.State
	}
	return "changed"
}
