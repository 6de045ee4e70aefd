// Command ezfs mounts directories as encryption zones and administers their keys. It
// parses flags and prints results; the work is done by the packages it calls.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/ezfs/ezfs/control"
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
	} else if isHelper(args[0]) {
		// mount(8) runs us as /sbin/mount.fuse.ezfs BACKING MNT -o OPTIONS.
		margs, fake, err := helperArgs(args[1:])
		if err != nil {
			fail(err)
		}
		if fake {
			return
		}
		args = append([]string{"ezfs"}, margs...)
		os.Args = args
	}
	args = append(args[:1], reorder(app.Commands, args[1:])...)
	jsonOut = wantsJSON(args[1:])
	if err := app.Run(args); err != nil {
		fail(err)
	}
}

// jsonOut is set when the command line asks for --json: a failure is printed on stdout
// as JSON too, with its code.
var jsonOut bool

func wantsJSON(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if a == "--json" || a == "-json" || a == "--json=true" {
			return true
		}
	}
	return false
}

// failure is the --json output of a failed command.
type failure struct {
	Error struct {
		Code     control.Code `json:"code"`
		ExitCode int          `json:"exit_code"`
		Message  string       `json:"message"`
	} `json:"error"`
}

// fail tells the waiting parent, if any, and stderr why this run failed, and exits with
// the exit code of the error's class (exitCodesHelp).
func fail(err error) {
	if childReport != nil {
		childReport(err)
	}
	code := classify(err)
	exit := code.ExitCode()
	if errors.As(err, new(*couldNotCheck)) {
		exit = fsckCouldNotCheck // fsck's own codes (fsckExitHelp)
	}
	if jsonOut {
		var f failure
		f.Error.Code, f.Error.ExitCode, f.Error.Message = code, exit, oneLine(err)
		_ = printJSON(f)
	}
	fmt.Fprintln(os.Stderr, "ezfs: "+oneLine(err))
	os.Exit(exit)
}

// classify is daemon.Classify. (No flag is Required: urfave/cli's error for a missing
// one has no exported type, and it reads the arguments as a subcommand then.)
func classify(err error) control.Code { return daemon.Classify(err) }

// exitCodesHelp documents the exit codes, an ABI: in --help, the man page, the README.
const exitCodesHelp = `EXIT STATUS (the "code" of a failure in --json output, and of a control socket answer):
   0  ok
   1  internal       anything else
   2  usage          bad flag, argument or mount option; unknown command
   3  not_found      no such key, zone, job, main key, keystore, mount or file; a path outside every mount
   4  permission     wrong passphrase or PIN, a credential refused or missing, not root
   5  unavailable    a key provider (Vault, PKCS#11 token) or the daemon does not answer
   6  busy           in use, already exists, a job already running, not empty, changed meanwhile, not in a key state that allows it
   7  corrupt        data or a record fails authentication or does not parse
   fsck has its own: 0 clean, 1 problems found (and not all repaired), 2 could not check
   (any failure above; the "code" of --json says which)`

// usageErrors makes the flag parsing errors of every command a one-line usage error
// (urfave/cli prints the help otherwise).
func usageErrors(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = onUsageError
		usageErrors(c.Subcommands)
	}
}

func onUsageError(_ *cli.Context, err error, _ bool) error {
	return daemon.UsageError("%v (see --help)", err)
}

func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", " ")
}

var (
	jsonFlag     = &cli.BoolFlag{Name: "json", Usage: "print JSON"}
	mountFlag    = &cli.StringFlag{Name: "mount", Usage: "the ezfs mountpoint to talk to (default: the only one)"}
	keystoreFlag = &cli.StringFlag{Name: "keystore", Usage: "keystore folder, or etcd://HOST:PORT[,HOST:PORT...]/PREFIX (credentials: EZFS_ETCD_* variables) (default: BACKING/.ezfs)"}
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
		fail(daemon.UsageError("unknown command %q (see 'ezfs --help')", name))
	}
	app.OnUsageError = onUsageError
	usageErrors(app.Commands)
	return app
}

func buildApp() *cli.App {
	return &cli.App{
		Name:                 "ezfs",
		Usage:                "encryption zones on a FUSE mount",
		Description:          exitCodesHelp,
		HideHelpCommand:      true,
		EnableBashCompletion: false,
		ExitErrHandler:       func(*cli.Context, error) {},
		Commands: []*cli.Command{
			{
				Name: "init", Usage: "create the keystore and main key of a backing directory", ArgsUsage: "BACKING",
				Flags: append(append([]cli.Flag{keystoreFlag, passFileFlag, pinFileFlag,
					&cli.StringFlag{Name: "from-backup", Usage: "restore the keystore from this 'ezfs keystore backup' file instead of making one (no main key is made)"}},
					providerFlags...), vaultServerFlags...),
				Action: cmdInit,
			},
			{
				Name: "mount", Usage: "mount BACKING at MOUNTPOINT", ArgsUsage: "BACKING MOUNTPOINT",
				Flags: []cli.Flag{keystoreFlag, passFileFlag, pinFileFlag,
					&cli.BoolFlag{Name: "foreground", Aliases: []string{"f"}, Usage: "stay attached; log to stderr"},
					&cli.StringSliceFlag{Name: "o", Usage: "mount options: allow_other, ro, nopassthrough, sharedstorage (another host or daemon serves the same backing dir), ... (comma separated)"},
					&cli.BoolFlag{Name: "debug", Usage: "log every FUSE request"},
					&cli.DurationFlag{Name: "key-ttl", Usage: "how long an unwrapped zone key stays cached unused (default 10m)"},
					&cli.DurationFlag{Name: "kms-poll", Usage: "how often to look for main key versions made in the provider (a Transit rotation in Vault) (default 1h)"},
					&cli.StringFlag{Name: "metrics", Usage: "serve Prometheus metrics at /metrics on this Unix socket path or HOST:PORT (default: off)"},
					&cli.StringFlag{Name: "log-format", Usage: "the daemon's log: text or json (one JSON object a line)"},
					// Tests only: the shortest retention `key delete` accepts (default 1 day).
					&cli.DurationFlag{Name: "test-min-retention", Hidden: true}},
				Action: cmdMount,
			},
			{Name: "umount", Aliases: []string{"unmount"}, Usage: "unmount and stop the daemon", ArgsUsage: "MOUNTPOINT", Action: cmdUmount},
			{Name: "status", Usage: "show the daemons, their mounts and provider health", Flags: []cli.Flag{jsonFlag, mountFlag}, Action: cmdStatus},
			{
				Name: "key", Usage: "manage zone keys",
				Subcommands: append([]*cli.Command{
					{Name: "create", Usage: "create a zone key", ArgsUsage: "NAME", Flags: []cli.Flag{jsonFlag, mountFlag,
						&cli.StringFlag{Name: "main-key", Value: "default", Usage: "the main key that wraps its versions"}}, Action: cmdKeyChange("create")},
					{Name: "set-main", Usage: "re-wrap every version of a zone key under another main key (file contents and EDEKs untouched)",
						ArgsUsage: "NAME MAIN-KEY", Flags: []cli.Flag{jsonFlag, mountFlag}, Action: cmdKeySetMain},
					{Name: "roll", Usage: "add a new version; new files use it", ArgsUsage: "NAME", Flags: []cli.Flag{jsonFlag, mountFlag}, Action: cmdKeyChange("roll")},
					{Name: "list", Usage: "list zone keys", Flags: []cli.Flag{jsonFlag, mountFlag}, Action: cmdKeyList},
					{Name: "describe", Usage: "show a key's versions and the main key version wrapping each", ArgsUsage: "NAME", Flags: []cli.Flag{jsonFlag, mountFlag}, Action: cmdKeyDescribe},
					keyPolicyCommand(),
				}, keyLifecycleCommands()...),
			},
			{
				Name: "zone", Usage: "manage encryption zones",
				Subcommands: []*cli.Command{
					{Name: "create", Usage: "make an empty directory an encryption zone", ArgsUsage: "PATH",
						Flags: []cli.Flag{jsonFlag, &cli.StringFlag{Name: "key", Usage: "zone key name (required)"}}, Action: cmdZoneCreate},
					{Name: "list", Usage: "list zones", Flags: []cli.Flag{jsonFlag, mountFlag}, Action: cmdZoneList},
				},
			},
			reencryptCommand(),
			keystoreCommand(),
			fsckCommand(),
			kmsCommand(),
			docCommand(),
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
		return daemon.UsageError("%s needs %s (see --help)", c.Command.FullName(), strings.Join(names, " "))
	}
	for i := range names {
		if c.Args().Get(i) == "" {
			return daemon.UsageError("%s must not be empty", names[i])
		}
	}
	return nil
}
