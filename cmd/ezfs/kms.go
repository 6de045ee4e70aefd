package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ezfs/ezfs/control"
	"github.com/ezfs/ezfs/daemon"
	"github.com/ezfs/ezfs/keystore"
	"github.com/urfave/cli/v2"
)

// credentialFlags say where a new main key version's secret comes from; the path or
// name is recorded with the version, the secret never.
var credentialFlags = []cli.Flag{
	&cli.StringFlag{Name: "vault-token-file", Usage: "the Vault token of this main key is in this file (recorded: the daemon reads it at mount)"},
	&cli.StringFlag{Name: "credential-env", Usage: "the secret of this main key (PIN, Vault token, AppRole secret ID or passphrase) is in this environment variable of 'ezfs mount' (its name is recorded)"},
	&cli.StringFlag{Name: "credential-systemd", Usage: "the secret of this main key is the systemd credential of this name (LoadCredential= of the unit running 'ezfs mount'; the name is recorded, the daemon reads it from $CREDENTIALS_DIRECTORY)"},
	&cli.StringFlag{Name: "vault-auth", Value: "token", Usage: "how the daemon authenticates to Vault: token or approle"},
	&cli.StringFlag{Name: "vault-role-id", Usage: "the AppRole role ID (recorded: it is no secret)"},
	&cli.StringFlag{Name: "vault-secret-id-file", Usage: "the AppRole secret ID is in this file (recorded: the daemon reads it at every login)"},
	&cli.StringFlag{Name: "vault-auth-mount", Usage: "the AppRole auth method's mount path (default approle)"},
}

func kmsCommand() *cli.Command {
	common := []cli.Flag{jsonFlag, mountFlag}
	enrolFlags := append(append(append([]cli.Flag{jsonFlag, mountFlag, passFileFlag, pinFileFlag}, providerFlags...), vaultServerFlags...), credentialFlags...)
	return &cli.Command{
		Name: "kms", Usage: "manage main keys: named, versioned, each with its own provider",
		Subcommands: []*cli.Command{
			{Name: "show", Usage: "list main keys, their versions, providers, health and the zone keys they protect",
				ArgsUsage: "[NAME]", Flags: common, Action: cmdKMS(control.OpKMSShow)},
			{Name: "create", Usage: "create main key NAME with its own provider (--pin-file, --vault-token-file: its credential's source)",
				ArgsUsage: "NAME", Flags: enrolFlags, Action: cmdKMS(control.OpKMSCreate)},
			{Name: "rotate", Usage: "make a new version of a main key (default: default) with its current provider",
				ArgsUsage: "[NAME]", Flags: []cli.Flag{jsonFlag, mountFlag, passFileFlag, pinFileFlag}, Action: cmdKMS(control.OpKMSRotate)},
			{Name: "set", Usage: "give a main key another provider: its key becomes the current version",
				ArgsUsage: "[NAME]", Flags: enrolFlags, Action: cmdKMS(control.OpKMSSet)},
			{Name: "rewrap", Usage: "re-wrap every zone key version under the main key's current version",
				ArgsUsage: "[NAME]", Flags: common, Action: cmdKMS(control.OpKMSRewrap)},
			{Name: "retire", Usage: "stop using a main key version that wraps nothing any more",
				ArgsUsage: "[NAME] VERSION", Flags: common, Action: cmdKMS(control.OpKMSRetire)},
			{Name: "check", Usage: "ask the providers of a main key (default: all) now",
				ArgsUsage: "[NAME]", Flags: common, Action: cmdKMS(control.OpKMSCheck)},
		},
	}
}

// kmsArgs reads NAME (and VERSION) from the command line.
func kmsArgs(c *cli.Context, op string) (control.KMSArgs, error) {
	var a control.KMSArgs
	args := c.Args().Slice()
	switch {
	case op == control.OpKMSCreate:
		if err := exactArgs(c, "NAME"); err != nil {
			return a, err
		}
	case op == control.OpKMSRetire:
		if len(args) < 1 || len(args) > 2 {
			return a, daemon.UsageError("%s needs [NAME] VERSION (see --help)", c.Command.FullName())
		}
		v, err := strconv.ParseUint(strings.TrimPrefix(args[len(args)-1], "v"), 10, 32)
		if err != nil {
			return a, daemon.UsageError("VERSION must be a number, not %q", args[len(args)-1])
		}
		a.Version = uint32(v)
		args = args[:len(args)-1]
	case len(args) > 1:
		return a, daemon.UsageError("%s takes at most one NAME (see --help)", c.Command.FullName())
	}
	if len(args) > 0 {
		a.Name = args[0]
	}
	return a, nil
}

func cmdKMS(op string) cli.ActionFunc {
	return func(c *cli.Context) error {
		a, err := kmsArgs(c, op)
		if err != nil {
			return err
		}
		sock, err := socketFor(c)
		if err != nil {
			return err
		}
		switch op {
		case control.OpKMSCreate, control.OpKMSSet:
			if err := enrolArgs(c, &a); err != nil {
				return err
			}
		case control.OpKMSRotate:
			if err := rotateArgs(c, sock, &a); err != nil {
				return err
			}
		}
		defer zeroArgs(&a)
		var mks []control.MainKeyInfo
		if err := control.Call(sock, op, a, &mks); err != nil {
			return err
		}
		if c.Bool("json") {
			return printJSON(mks)
		}
		return printMainKeys(mks)
	}
}

func zeroArgs(a *control.KMSArgs) {
	for _, b := range [][]byte{a.Passphrase, a.PIN} {
		for i := range b {
			b[i] = 0
		}
	}
}

// enrolArgs fill a with the provider flags, where the credential comes from, and the
// administrator's secret when it is not in a file the daemon reads.
func enrolArgs(c *cli.Context, a *control.KMSArgs) error {
	spec := specFlags(c)
	if spec.Provider == "vault" {
		spec.VaultAuth, spec.VaultRoleID, spec.VaultAuthMount = c.String("vault-auth"), c.String("vault-role-id"), c.String("vault-auth-mount")
	}
	file, err := credentialFile(c, spec.Provider, spec.VaultAuth)
	if err != nil {
		return err
	}
	if cr := (&keystore.Credential{File: file, Env: c.String("credential-env"), Systemd: c.String("credential-systemd")}); !cr.None() {
		n := 0
		for _, v := range []string{cr.File, cr.Env, cr.Systemd} {
			if v != "" {
				n++
			}
		}
		if n > 1 {
			return fmt.Errorf("give one source for the credential: a file, --credential-env or --credential-systemd")
		}
		spec.Credential = cr
	}
	if err := spec.Check(); err != nil {
		return err
	}
	a.Provider, a.PKCS11Module, a.PKCS11Token, a.PKCS11Key = spec.Provider, spec.PKCS11Module, spec.PKCS11Token, spec.PKCS11Key
	a.VaultKey, a.VaultMount = spec.VaultKey, spec.VaultMount
	a.VaultAddress, a.VaultNamespace, a.VaultCACert = spec.VaultAddress, spec.VaultNamespace, spec.VaultCACert
	a.VaultAuth, a.VaultRoleID, a.VaultAuthMount = spec.VaultAuth, spec.VaultRoleID, spec.VaultAuthMount
	a.CredentialFile, a.CredentialEnv, a.CredentialSystemd = file, c.String("credential-env"), c.String("credential-systemd")
	switch {
	case a.CredentialEnv != "":
		v := os.Getenv(a.CredentialEnv)
		if v == "" {
			return fmt.Errorf("--credential-env %s: the variable is not set", a.CredentialEnv)
		}
		setSecret(a, spec.Provider, []byte(v))
		return nil
	case file != "" || a.CredentialSystemd != "":
		return nil // the daemon reads it
	}
	sec, err := secretsFor(c, spec.Provider, spec.Provider == keystore.KindSystem)
	if err != nil {
		return err
	}
	a.Passphrase, a.PIN = sec.Passphrase, sec.PIN
	if spec.Provider == "vault" {
		a.VaultToken = os.Getenv("VAULT_TOKEN")
	}
	return nil
}

// credentialFile is the absolute path of the credential file flag of provider (and
// Vault auth method), if any.
func credentialFile(c *cli.Context, provider, vaultAuth string) (string, error) {
	flag := map[string]string{keystore.KindSystem: "passphrase-file", "pkcs11": "pin-file", "vault": "vault-token-file"}[provider]
	if provider == "vault" && vaultAuth == "approle" {
		flag = "vault-secret-id-file"
		if c.String("vault-token-file") != "" {
			return "", fmt.Errorf("--vault-auth approle takes --vault-secret-id-file, not --vault-token-file")
		}
	} else if c.String("vault-secret-id-file") != "" {
		return "", fmt.Errorf("--vault-secret-id-file needs --provider vault --vault-auth approle")
	}
	f := c.String(flag)
	if f == "" {
		return "", nil
	}
	abs, err := filepath.Abs(f)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(abs); err != nil {
		return "", fmt.Errorf("--%s: %w", flag, err)
	}
	return abs, nil
}

func setSecret(a *control.KMSArgs, provider string, v []byte) {
	switch provider {
	case keystore.KindSystem:
		a.Passphrase = v
	case "pkcs11":
		a.PIN = v
	default:
		a.VaultToken = string(v)
	}
}

// rotateArgs bring the mount's secret for a main key whose current version records no
// credential source of its own.
func rotateArgs(c *cli.Context, sock string, a *control.KMSArgs) error {
	var cur []control.MainKeyInfo
	if err := control.Call(sock, control.OpKMSShow, control.KMSArgs{Name: a.Name}, &cur); err != nil {
		return err
	}
	for _, mk := range cur {
		if !mk.Current || mk.Credential != (*keystore.Credential)(nil).String() {
			continue
		}
		sec, err := secretsFor(c, mk.Provider, false)
		if err != nil {
			return err
		}
		a.Passphrase, a.PIN = sec.Passphrase, sec.PIN
		if mk.Provider == "vault" {
			a.VaultToken = os.Getenv("VAULT_TOKEN")
		}
	}
	return nil
}

func printMainKeys(mks []control.MainKeyInfo) error {
	w := table()
	fmt.Fprintln(w, "MAIN KEY\tVERSION\tPROVIDER\tKEY\tALGORITHM\tFINGERPRINT\tSTATE\tHEALTH\tPROTECTS\t")
	for _, mk := range mks {
		cur := ""
		if mk.Current {
			cur = "(current)"
		}
		if mk.Origin != "" {
			cur += " (" + mk.Origin + " in the provider)"
		}
		health := "not asked"
		if h := mk.Health; h != nil && h.OK {
			health = "ok since " + ts(h.Since)
		} else if h != nil {
			health = "ERROR since " + ts(h.Since) + ": " + h.Error
		}
		protects := strings.Join(mk.ZoneKeys, ",")
		if protects == "" {
			protects = "-"
		}
		fmt.Fprintf(w, "%s\tv%d\t%s\t%s\t%s-%s\t%.16s…\t%s\t%s\t%s\t%s\n", mk.Name, mk.Version, mk.Provider, mk.KeyRef,
			mk.Algorithm, mk.OAEPHash, mk.Fingerprint, mk.State, health, protects, cur)
	}
	return w.Flush()
}
