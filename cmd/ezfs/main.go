// Command ezfs mounts directories as encryption zones and administers their keys. It
// parses flags and prints results; the work is done by the packages it calls.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/ezfs/ezfs/crypto"
	"github.com/ezfs/ezfs/daemon"
	"github.com/urfave/cli/v2"
)

func main() {
	app := newApp()
	args := os.Args
	if blob, report, ok := daemon.Child(); ok {
		isChild, childReport = true, report
		if err := json.Unmarshal(blob, &childSecrets); err != nil {
			fail(fmt.Errorf("daemon secrets: %w", err))
		}
		crypto.Zero(blob)
	}
	args = append(args[:1], reorder(app.Commands, args[1:])...)
	if err := app.Run(args); err != nil {
		fail(err)
	}
}

// fail tells the waiting parent, if any, and stderr why this run failed, and exits.
func fail(err error) {
	if childReport != nil {
		childReport(err)
	}
	fmt.Fprintln(os.Stderr, "ezfs: "+oneLine(err))
	os.Exit(1)
}

func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", " ")
}

var (
	jsonFlag     = &cli.BoolFlag{Name: "json", Usage: "print JSON"}
	mountFlag    = &cli.StringFlag{Name: "mount", Usage: "the ezfs mountpoint to talk to (default: the only one)"}
	keystoreFlag = &cli.StringFlag{Name: "keystore", Usage: "keystore folder (default: BACKING/.ezfs)"}
	passFileFlag = &cli.StringFlag{Name: "passphrase-file", Usage: "read the passphrase from this file (else $EZFS_PASSPHRASE or a prompt)"}
	pinFileFlag  = &cli.StringFlag{Name: "pin-file", Usage: "read the PKCS#11 PIN from this file (else $EZFS_EXTERNAL_KEY_PIN or a prompt)"}
	// providerFlags describe a main key: init and kms set.
	providerFlags = []cli.Flag{
		&cli.StringFlag{Name: "provider", Value: "system", Usage: "main key provider: system, pkcs11 or vault"},
		&cli.StringFlag{Name: "pkcs11-module", Usage: "PKCS#11 module (.so) path"},
		&cli.StringFlag{Name: "pkcs11-token", Usage: "PKCS#11 token label"},
		&cli.StringFlag{Name: "pkcs11-key", Usage: "label of the RSA key on the token (generated if missing)"},
		&cli.StringFlag{Name: "vault-key", Usage: "Transit key name (created as rsa-3072 if missing); token from VAULT_TOKEN unless its source is given"},
		&cli.StringFlag{Name: "vault-transit-mount", Value: "transit", Usage: "mount path of the Transit engine"},
	}
	// vaultServerFlags locate a Vault server; recorded with the main key version.
	vaultServerFlags = []cli.Flag{
		&cli.StringFlag{Name: "vault-addr", EnvVars: []string{"VAULT_ADDR"}, Usage: "Vault server address"},
		&cli.StringFlag{Name: "vault-namespace", EnvVars: []string{"VAULT_NAMESPACE"}, Usage: "Vault namespace"},
		&cli.StringFlag{Name: "vault-cacert", EnvVars: []string{"VAULT_CACERT"}, Usage: "CA certificate file of the Vault server"},
	}
)

func newApp() *cli.App {
	app := buildApp()
	// An unknown command (or subcommand) is a one-line error with a non-zero exit.
	app.CommandNotFound = func(c *cli.Context, name string) {
		fmt.Fprintf(os.Stderr, "ezfs: unknown command %q (see 'ezfs --help')\n", name)
		os.Exit(2)
	}
	return app
}

func buildApp() *cli.App {
	return &cli.App{
		Name:                 "ezfs",
		Usage:                "encryption zones on a FUSE mount",
		HideHelpCommand:      true,
		EnableBashCompletion: false,
		ExitErrHandler:       func(*cli.Context, error) {},
		Commands: []*cli.Command{
			{
				Name: "init", Usage: "create the keystore and main key of a backing directory", ArgsUsage: "BACKING",
				Flags:  append(append([]cli.Flag{keystoreFlag, passFileFlag, pinFileFlag}, providerFlags...), vaultServerFlags...),
				Action: cmdInit,
			},
			{
				Name: "mount", Usage: "mount BACKING at MOUNTPOINT", ArgsUsage: "BACKING MOUNTPOINT",
				Flags: []cli.Flag{keystoreFlag, passFileFlag, pinFileFlag,
					&cli.BoolFlag{Name: "foreground", Aliases: []string{"f"}, Usage: "stay attached; log to stderr"},
					&cli.StringSliceFlag{Name: "o", Usage: "mount options: allow_other, ro, ... (comma separated)"},
					&cli.BoolFlag{Name: "debug", Usage: "log every FUSE request"},
					&cli.DurationFlag{Name: "key-ttl", Usage: "how long an unwrapped zone key stays cached unused (default 10m)"},
					&cli.DurationFlag{Name: "kms-poll", Usage: "how often to look for main key versions made in the provider (a Transit rotation in Vault) (default 1h)"}},
				Action: cmdMount,
			},
			{Name: "umount", Aliases: []string{"unmount"}, Usage: "unmount and stop the daemon", ArgsUsage: "MOUNTPOINT", Action: cmdUmount},
			{Name: "status", Usage: "show the daemons, their mounts and provider health", Flags: []cli.Flag{jsonFlag, mountFlag}, Action: cmdStatus},
			{
				Name: "key", Usage: "manage zone keys",
				Subcommands: []*cli.Command{
					{Name: "create", Usage: "create a zone key", ArgsUsage: "NAME", Flags: []cli.Flag{jsonFlag, mountFlag,
						&cli.StringFlag{Name: "main-key", Value: "default", Usage: "the main key that wraps its versions"}}, Action: cmdKeyChange("create")},
					{Name: "set-main", Usage: "re-wrap every version of a zone key under another main key (file contents and EDEKs untouched)",
						ArgsUsage: "NAME MAIN-KEY", Flags: []cli.Flag{jsonFlag, mountFlag}, Action: cmdKeySetMain},
					{Name: "roll", Usage: "add a new version; new files use it", ArgsUsage: "NAME", Flags: []cli.Flag{jsonFlag, mountFlag}, Action: cmdKeyChange("roll")},
					{Name: "list", Usage: "list zone keys", Flags: []cli.Flag{jsonFlag, mountFlag}, Action: cmdKeyList},
					{Name: "describe", Usage: "show a key's versions and the main key version wrapping each", ArgsUsage: "NAME", Flags: []cli.Flag{jsonFlag, mountFlag}, Action: cmdKeyDescribe},
				},
			},
			{
				Name: "zone", Usage: "manage encryption zones",
				Subcommands: []*cli.Command{
					{Name: "create", Usage: "make an empty directory an encryption zone", ArgsUsage: "PATH",
						Flags: []cli.Flag{jsonFlag, &cli.StringFlag{Name: "key", Usage: "zone key name", Required: true}}, Action: cmdZoneCreate},
					{Name: "list", Usage: "list zones", Flags: []cli.Flag{jsonFlag, mountFlag}, Action: cmdZoneList},
				},
			},
			reencryptCommand(),
			kmsCommand(),
			{
				Name: "file", Usage: "inspect files",
				Subcommands: []*cli.Command{
					{Name: "info", Usage: "show the zone, key version and file ID of a file", ArgsUsage: "PATH", Flags: []cli.Flag{jsonFlag}, Action: cmdFileInfo},
				},
			},
		},
	}
}

// reorder moves flags ahead of positional arguments within the command named by args,
// so that `ezfs zone create PATH --key NAME` works as the docs write it (urfave/cli v2
// stops parsing flags at the first positional argument).
func reorder(cmds []*cli.Command, args []string) []string {
	var path []string
	for len(args) > 0 {
		var found *cli.Command
		for _, c := range cmds {
			if c.HasName(args[0]) {
				found = c
			}
		}
		if found == nil {
			break
		}
		path = append(path, args[0])
		args = args[1:]
		if len(found.Subcommands) == 0 {
			return append(path, splitFlags(found.Flags, args)...)
		}
		cmds = found.Subcommands
	}
	return append(path, args...)
}

func splitFlags(flags []cli.Flag, args []string) []string {
	takesValue := map[string]bool{}
	for _, f := range flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			takesValue[n] = !isBool
		}
	}
	var fl, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			pos = append(pos, a)
			continue
		}
		fl = append(fl, a)
		name := strings.TrimLeft(a, "-")
		if !strings.Contains(name, "=") && takesValue[name] && i+1 < len(args) {
			fl = append(fl, args[i+1])
			i++
		}
	}
	if len(pos) > 0 {
		fl = append(fl, "--")
	}
	return append(fl, pos...)
}

// exactArgs checks the number of positional arguments.
func exactArgs(c *cli.Context, names ...string) error {
	if c.NArg() != len(names) {
		return fmt.Errorf("%s needs %s (see --help)", c.Command.FullName(), strings.Join(names, " "))
	}
	for i := range names {
		if c.Args().Get(i) == "" {
			return errors.New(names[i] + " must not be empty")
		}
	}
	return nil
}
