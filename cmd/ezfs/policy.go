package main

import (
	"fmt"

	"github.com/ezfs/ezfs/control"
	"github.com/ezfs/ezfs/daemon"
	"github.com/urfave/cli/v2"
)

func keyPolicyCommand() *cli.Command {
	return &cli.Command{
		Name: "policy", Usage: "set a zone key's rotation schedule: the daemon rolls it when its newest version is that old",
		ArgsUsage: "NAME",
		Flags: []cli.Flag{jsonFlag, mountFlag,
			&cli.DurationFlag{Name: "rotate-every", Usage: "rotation period, e.g. 720h (at least 1h); 0 clears the policy"},
			&cli.BoolFlag{Name: "reencrypt", Usage: "after each scheduled roll, start reencryption on the key's zones"}},
		Action: cmdKeyPolicy,
	}
}

func cmdKeyPolicy(c *cli.Context) error {
	if err := exactArgs(c, "NAME"); err != nil {
		return err
	}
	if !c.IsSet("rotate-every") {
		return daemon.UsageError("key policy needs --rotate-every DURATION (0 clears the policy)")
	}
	sock, err := socketFor(c)
	if err != nil {
		return err
	}
	var ki control.KeyInfo
	args := control.KeyPolicyArgs{Name: c.Args().First(), RotateEvery: c.Duration("rotate-every"), Reencrypt: c.Bool("reencrypt")}
	if err := control.Call(sock, control.OpKeyPolicy, args, &ki); err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(ki)
	}
	printPolicy(ki)
	return nil
}

// printPolicy prints a key's rotation policy and when it is due.
func printPolicy(k control.KeyInfo) {
	if k.Policy == nil {
		fmt.Printf("key %s: no rotation policy\n", k.Name)
		return
	}
	what := ""
	if k.Policy.Reencrypt {
		what = ", then reencrypt its zones"
	}
	fmt.Printf("key %s: rotate every %s%s\n", k.Name, k.Policy.RotateEvery, what)
	if k.NextRotation != nil {
		fmt.Printf("key %s: next rotation %s\n", k.Name, ts(*k.NextRotation))
	}
	if k.RotationError != "" {
		fmt.Printf("key %s: the last scheduled roll failed: %s\n", k.Name, k.RotationError)
	}
}
