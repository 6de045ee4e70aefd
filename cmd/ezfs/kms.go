package main

import (
	"fmt"
	"os"
	"strconv"

	"github.com/ezfs/ezfs/control"
	"github.com/ezfs/ezfs/keystore"
	"github.com/urfave/cli/v2"
)

func kmsCommand() *cli.Command {
	return &cli.Command{
		Name: "kms", Usage: "manage the main key: versions, rotation, provider",
		Subcommands: []*cli.Command{
			{Name: "show", Usage: "list main key versions", Flags: []cli.Flag{jsonFlag, mountFlag}, Action: cmdKMS(control.OpKMSShow)},
			{Name: "rotate", Usage: "make a new main key version with the current provider",
				Flags: []cli.Flag{jsonFlag, mountFlag, passFileFlag, pinFileFlag}, Action: cmdKMS(control.OpKMSRotate)},
			{Name: "set", Usage: "switch to another provider: its key becomes the current version",
				Flags: append([]cli.Flag{jsonFlag, mountFlag, passFileFlag, pinFileFlag}, providerFlags...), Action: cmdKMS(control.OpKMSSet)},
			{Name: "rewrap", Usage: "re-wrap every zone key version under the current main key version",
				Flags: []cli.Flag{jsonFlag, mountFlag}, Action: cmdKMS(control.OpKMSRewrap)},
			{Name: "retire", Usage: "stop using a main key version that wraps nothing any more", ArgsUsage: "VERSION",
				Flags: []cli.Flag{jsonFlag, mountFlag}, Action: cmdKMS(control.OpKMSRetire)},
		},
	}
}

func cmdKMS(op string) cli.ActionFunc {
	return func(c *cli.Context) error {
		sock, err := socketFor(c)
		if err != nil {
			return err
		}
		var a control.KMSArgs
		switch op {
		case control.OpKMSRetire:
			if err := exactArgs(c, "VERSION"); err != nil {
				return err
			}
			v, err := strconv.ParseUint(c.Args().First(), 10, 32)
			if err != nil {
				return fmt.Errorf("VERSION must be a number, not %q", c.Args().First())
			}
			a.Version = uint32(v)
		case control.OpKMSRotate, control.OpKMSSet:
			provider := ""
			if op == control.OpKMSSet {
				spec := specFlags(c)
				if err := spec.Check(); err != nil {
					return err
				}
				provider = spec.Provider
				a = control.KMSArgs{Provider: spec.Provider, PKCS11Module: spec.PKCS11Module, PKCS11Token: spec.PKCS11Token,
					PKCS11Key: spec.PKCS11Key, VaultKey: spec.VaultKey, VaultMount: spec.VaultMount}
			} else {
				var cur []control.MainKeyInfo
				if err := control.Call(sock, control.OpKMSShow, nil, &cur); err != nil {
					return err
				}
				for _, mk := range cur {
					if mk.Current {
						provider = mk.Provider
					}
				}
			}
			sec, err := secretsFor(c, provider, provider == keystore.KindSystem && op == control.OpKMSSet)
			if err != nil {
				return err
			}
			defer sec.Zero()
			a.Passphrase, a.PIN = sec.Passphrase, sec.PIN
			if provider == "vault" {
				a.VaultAddress, a.VaultToken = os.Getenv("VAULT_ADDR"), os.Getenv("VAULT_TOKEN")
				a.VaultNamespace, a.VaultCACert = os.Getenv("VAULT_NAMESPACE"), os.Getenv("VAULT_CACERT")
			}
		}
		var mks []control.MainKeyInfo
		if err := control.Call(sock, op, a, &mks); err != nil {
			return err
		}
		if c.Bool("json") {
			return printJSON(mks)
		}
		w := table()
		fmt.Fprintln(w, "VERSION\tPROVIDER\tKEY\tALGORITHM\tFINGERPRINT\tSTATE\tWRAPS\t")
		for _, mk := range mks {
			cur := ""
			if mk.Current {
				cur = "(current)"
			}
			fmt.Fprintf(w, "v%d\t%s\t%s\t%s-%s\t%.16s…\t%s\t%d zone key versions\t%s\n", mk.Version, mk.Provider, mk.KeyRef,
				mk.Algorithm, mk.OAEPHash, mk.Fingerprint, mk.State, mk.ZoneKeyVersions, cur)
		}
		return w.Flush()
	}
}
