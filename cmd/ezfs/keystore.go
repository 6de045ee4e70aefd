package main

import (
	"fmt"

	"github.com/ezfs/ezfs/control"
	"github.com/ezfs/ezfs/daemon"
	"github.com/ezfs/ezfs/keystore"
	"github.com/urfave/cli/v2"
)

func keystoreCommand() *cli.Command {
	return &cli.Command{
		Name: "keystore", Usage: "keystore maintenance",
		Subcommands: []*cli.Command{
			{Name: "backup", Usage: "write a consistent copy of the keystore (wrapped keys only) to FILE, mode 0600",
				ArgsUsage: "FILE",
				Flags: []cli.Flag{jsonFlag, mountFlag,
					&cli.StringFlag{Name: "keystore", Usage: "back up this keystore folder directly (nothing mounted) instead of asking the daemon"},
					&cli.BoolFlag{Name: "force", Usage: "replace FILE if it exists"}},
				Action: cmdKeystoreBackup},
			{Name: "migrate", Usage: "copy every record of a keystore into an empty one (a folder or etcd://HOST:PORT[,...]/PREFIX), verified record by record; nothing mounted on either",
				ArgsUsage: "[BACKING]",
				Flags: []cli.Flag{jsonFlag,
					&cli.StringFlag{Name: "to", Usage: "the empty keystore to fill: a folder or etcd://HOST:PORT[,HOST:PORT...]/PREFIX (credentials: EZFS_ETCD_* variables)"},
					&cli.StringFlag{Name: "keystore", Usage: "the keystore to copy, a folder or an etcd location (default: BACKING/.ezfs)"}},
				Action: cmdKeystoreMigrate},
		},
	}
}

func cmdKeystoreBackup(c *cli.Context) error {
	if err := exactArgs(c, "FILE"); err != nil {
		return err
	}
	file, err := control.CanonicalFile(c.Args().First())
	if err != nil {
		return err
	}
	res := control.BackupResult{Path: file}
	if dir := c.String("keystore"); dir != "" {
		if res.Bytes, err = keystore.BackupDir(dir, file, c.Bool("force")); err != nil {
			return err
		}
	} else {
		sock, err := socketFor(c)
		if err != nil {
			return err
		}
		if err := control.Call(sock, control.OpKeystoreBackup, control.BackupArgs{Path: file, Force: c.Bool("force")}, &res); err != nil {
			return err
		}
	}
	if c.Bool("json") {
		return printJSON(res)
	}
	fmt.Printf("keystore backed up to %s (%d bytes); keep it with the main key material (see README, Backup and recovery)\n", res.Path, res.Bytes)
	return nil
}

// initFromBackup is `init BACKING --from-backup FILE`: the keystore is the backup's.
func initFromBackup(c *cli.Context, backing, ks string) error {
	file, err := control.Canonical(c.String("from-backup"))
	if err != nil {
		return err
	}
	r, err := keystore.Restore(ks, file)
	if err != nil {
		return err
	}
	fmt.Printf("restored the keystore of %s from %s: %d main key versions, %d zone keys (%d versions), %d zones\n",
		backing, file, r.MainKeyVersions, r.ZoneKeys, r.ZoneKeyVersions, r.Zones)
	return nil
}

// cmdKeystoreMigrate is `keystore migrate [BACKING] --to LOCATION [--keystore FROM]`.
func cmdKeystoreMigrate(c *cli.Context) error {
	if c.NArg() > 1 || (c.NArg() == 1) == (c.String("keystore") != "") {
		return daemon.UsageError("keystore migrate: give BACKING or --keystore FROM (one of them)")
	}
	if c.String("to") == "" {
		return daemon.UsageError("keystore migrate: --to LOCATION is required (a folder or etcd://HOST:PORT/PREFIX)")
	}
	var from string
	var err error
	if c.NArg() == 1 {
		backing, berr := backingDir(c.Args().First())
		if berr != nil {
			return berr
		}
		from, err = keystoreDir(c, backing)
	} else {
		from, err = keystoreLocation(c.String("keystore"))
	}
	if err != nil {
		return err
	}
	to, err := keystoreLocation(c.String("to"))
	if err != nil {
		return err
	}
	m, err := keystore.Migrate(from, to)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(m)
	}
	fmt.Printf("copied %d records from %s to %s, each read back and identical (main key versions %d, zone keys %d, zones %d, jobs %d, meta %d)\n",
		m.Total, m.From, m.To, m.Records["mainkeys"], m.Records["zonekeys"], m.Records["zones"], m.Records["jobs"], m.Records["meta"])
	return nil
}
