package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ezfs/ezfs/control"
	"github.com/ezfs/ezfs/crypto"
	"github.com/ezfs/ezfs/daemon"
	"github.com/ezfs/ezfs/fs"
	"github.com/ezfs/ezfs/keystore"
	"github.com/ezfs/ezfs/keystore/providers"
	"github.com/ezfs/ezfs/zones"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// Set when this process is a daemon started by `ezfs mount`, or one that executed
// itself again to drop secrets from its environment (childReport nil then).
var (
	isChild      bool
	childSecrets providers.Secrets
	childReport  func(error)
)

// readSecret reads a secret from the file named by flag fileFlag, else from the
// systemd credential cred ($CREDENTIALS_DIRECTORY/cred, LoadCredential=), else from the
// environment variable env, else from a prompt on the terminal (twice when confirm is
// set). Never from the command line.
func readSecret(c *cli.Context, what, fileFlag, cred, env string, confirm bool) ([]byte, error) {
	f := c.String(fileFlag)
	if dir := os.Getenv("CREDENTIALS_DIRECTORY"); f == "" && dir != "" {
		if p := filepath.Join(dir, cred); fileExists(p) {
			f = p
		}
	}
	if f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("%s file: %w", what, err)
		}
		if b = bytes.TrimRight(b, "\r\n"); len(b) == 0 {
			return nil, daemon.Reword(providers.ErrNoCredential, "%s file %s is empty", what, f)
		}
		return b, nil
	}
	if v := os.Getenv(env); v != "" {
		return []byte(v), nil
	}
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil || !term.IsTerminal(int(tty.Fd())) {
		return nil, daemon.Reword(providers.ErrNoCredential, "no %s: use --%s or %s, or run on a terminal", what, fileFlag, env)
	}
	defer tty.Close()
	ask := func(prompt string) ([]byte, error) {
		fmt.Fprint(tty, prompt)
		b, err := term.ReadPassword(int(tty.Fd()))
		fmt.Fprintln(tty)
		return b, err
	}
	p, err := ask(strings.ToUpper(what[:1]) + what[1:] + ": ")
	if err != nil {
		return nil, err
	}
	if len(p) == 0 {
		return nil, daemon.Reword(providers.ErrNoCredential, "empty %s", what)
	}
	if confirm {
		q, err := ask("Repeat " + what + ": ")
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(p, q) {
			return nil, daemon.UsageError("the %ss do not match", what)
		}
	}
	return p, nil
}

func passphrase(c *cli.Context, confirm bool) ([]byte, error) {
	return readSecret(c, "passphrase", "passphrase-file", "passphrase", "EZFS_PASSPHRASE", confirm)
}

func pin(c *cli.Context) ([]byte, error) {
	return readSecret(c, "PIN", "pin-file", "pin", "EZFS_EXTERNAL_KEY_PIN", false)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// secretsFor reads the secrets a provider spec needs.
func secretsFor(c *cli.Context, provider string, confirm bool) (providers.Secrets, error) {
	var sec providers.Secrets
	var err error
	switch provider {
	case keystore.KindSystem:
		sec.Passphrase, err = passphrase(c, confirm)
	case "pkcs11":
		sec.PIN, err = pin(c)
	}
	return sec, err
}

// mainKeySecrets reads the credentials the main key versions mks need to unwrap, as
// `ezfs mount` and `ezfs fsck` take them: the passphrase and PIN only if a version
// needs one (readSecret), VAULT_TOKEN, and the environment variables versions name as
// their credential's source.
func mainKeySecrets(c *cli.Context, mks []*keystore.MainKey) (providers.Secrets, error) {
	var sec providers.Secrets
	var err error
	needPass, needPIN := providers.Needs(mks)
	if needPass {
		if sec.Passphrase, err = passphrase(c, false); err != nil {
			return sec, err
		}
	}
	if needPIN {
		if sec.PIN, err = pin(c); err != nil {
			return sec, err
		}
	}
	if v := os.Getenv("VAULT_TOKEN"); v != "" {
		sec.VaultToken = []byte(v)
	}
	for _, name := range providers.EnvNames(mks) {
		if v := os.Getenv(name); v != "" {
			if sec.Env == nil {
				sec.Env = map[string][]byte{}
			}
			sec.Env[name] = []byte(v)
		}
	}
	return sec, nil
}

// specFlags reads a provider description from the init / kms set flags.
func specFlags(c *cli.Context) providers.Spec {
	return providers.Spec{
		Provider:     c.String("provider"),
		PKCS11Module: c.String("pkcs11-module"), PKCS11Token: c.String("pkcs11-token"), PKCS11Key: c.String("pkcs11-key"),
		VaultKey: c.String("vault-key"), VaultMount: c.String("vault-transit-mount"),
		VaultAddress: c.String("vault-addr"), VaultNamespace: c.String("vault-namespace"), VaultCACert: c.String("vault-cacert"),
	}
}

func keystoreDir(c *cli.Context, backing string) (string, error) {
	if k := c.String("keystore"); k != "" {
		return keystoreLocation(k)
	}
	return filepath.Join(backing, ".ezfs"), nil
}

// keystoreLocation is a keystore folder made absolute, or an etcd location as given.
func keystoreLocation(k string) (string, error) {
	if keystore.IsEtcd(k) {
		return k, nil
	}
	return control.Canonical(k)
}

func backingDir(p string) (string, error) {
	b, err := control.Canonical(p)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(b)
	if err != nil {
		return "", fmt.Errorf("backing directory: %w", err)
	}
	if !st.IsDir() {
		return "", daemon.Reword(zones.ErrNotDir, "backing directory %s is not a directory", p)
	}
	return b, nil
}

func cmdInit(c *cli.Context) error {
	if err := exactArgs(c, "BACKING"); err != nil {
		return err
	}
	spec := specFlags(c)
	if err := spec.Check(); err != nil {
		return err
	}
	backing, err := backingDir(c.Args().First())
	if err != nil {
		return err
	}
	ks, err := keystoreDir(c, backing)
	if err != nil {
		return err
	}
	if keystore.Exists(ks) {
		return daemon.Reword(keystore.ErrExists, "%s already has a keystore (%s)", c.Args().First(), ks)
	}
	if c.String("from-backup") != "" {
		return initFromBackup(c, backing, ks)
	}
	sec, err := secretsFor(c, spec.Provider, true)
	if err != nil {
		return err
	}
	sec.VaultToken = []byte(os.Getenv("VAULT_TOKEN"))
	defer sec.Zero()
	mk, err := providers.Init(context.Background(), ks, spec, sec)
	if err != nil {
		return err
	}
	fmt.Printf("initialised %s: keystore %s, main key v%d (%s: %s, %s-%s), fingerprint %s\n",
		backing, ks, mk.Version, mk.Provider, mk.KeyRef, mk.Algorithm, mk.OAEPHash, mk.Fingerprint)
	return nil
}

func cmdMount(c *cli.Context) error {
	if err := exactArgs(c, "BACKING", "MOUNTPOINT"); err != nil {
		return err
	}
	backing, err := backingDir(c.Args().Get(0))
	if err != nil {
		return err
	}
	mnt, err := control.Canonical(c.Args().Get(1))
	if err != nil {
		return err
	}
	if err := daemon.ClearStale(mnt); err != nil {
		return err
	}
	if st, err := os.Stat(mnt); err != nil {
		return daemon.Reword(err, "mountpoint %s is not a directory", c.Args().Get(1))
	} else if !st.IsDir() {
		return daemon.Reword(zones.ErrNotDir, "mountpoint %s is not a directory", c.Args().Get(1))
	}
	ks, err := keystoreDir(c, backing)
	if err != nil {
		return err
	}
	mo, err := fs.ParseMountOptions(c.StringSlice("o"))
	if err != nil {
		return daemon.UsageError("%v", err)
	}
	mo.Debug = c.Bool("debug")
	sec := childSecrets
	if !isChild {
		// Fail fast on a missing or busy keystore before asking for secrets, and ask
		// only for those the keystore's main keys need.
		s, err := keystore.Open(ks)
		if err != nil {
			if errors.Is(err, keystore.ErrLocked) {
				return daemon.Reword(err, "keystore %s is in use: %s is probably mounted already", ks, backing)
			}
			return err
		}
		mks, err := s.MainKeys()
		s.Close()
		if err != nil {
			return err
		}
		// Main keys whose credential is an environment variable of this command.
		daemon.AddSecretVars(providers.EnvNames(mks)...)
		if sec, err = mainKeySecrets(c, mks); err != nil {
			return err
		}
	}
	if !c.Bool("foreground") {
		return startBackground(c, backing, mnt, ks, mo, sec)
	}
	if !isChild && daemon.EnvHoldsSecret() {
		return handOver(sec, daemon.Reexec)
	}
	logger, events, err := daemon.NewLogger(c.String("log-format"), os.Stderr, mnt)
	if err != nil {
		return err
	}
	return daemon.Run(daemon.Config{
		Backing: backing, Mountpoint: mnt, Keystore: ks, Secrets: sec, Mount: mo, KeyTTL: c.Duration("key-ttl"), KMSPoll: c.Duration("kms-poll"), MinRetention: c.Duration("test-min-retention"), Metrics: c.String("metrics"),
		Logger: logger, Events: events,
		Ready: func() {
			if childReport != nil {
				childReport(nil)
			} else if c.String("log-format") == "json" {
				logger.Printf("mounted %s on %s", backing, mnt)
			} else {
				fmt.Fprintf(os.Stderr, "mounted %s on %s\n", backing, mnt)
			}
		},
	})
}

// startBackground starts the daemon that serves the mount and waits until it is ready.
func startBackground(c *cli.Context, backing, mnt, ks string, mo fs.MountOptions, sec providers.Secrets) error {
	args := []string{"mount", "--foreground", "--keystore", ks}
	if len(mo.Options) > 0 {
		args = append(args, "-o", strings.Join(mo.Options, ","))
	}
	if mo.Debug {
		args = append(args, "--debug")
	}
	for _, f := range []string{"key-ttl", "kms-poll", "test-min-retention"} {
		if d := c.Duration(f); d > 0 {
			args = append(args, "--"+f, d.String())
		}
	}
	for _, f := range []string{"metrics", "log-format"} {
		if v := c.String(f); v != "" {
			args = append(args, "--"+f, v)
		}
	}
	args = append(args, "--", backing, mnt)
	logDir, err := keystore.MakeLogDir(ks)
	if err != nil {
		return err
	}
	err = handOver(sec, func(blob []byte) error {
		return daemon.Start(args, blob, filepath.Join(logDir, "ezfs.log"))
	})
	if err != nil {
		return err
	}
	fmt.Printf("mounted %s on %s\n", backing, mnt)
	return nil
}

// handOver gives sec, encoded as Child's reader expects, to to (daemon.Start or
// daemon.Reexec) and wipes this process's copies.
func handOver(sec providers.Secrets, to func(blob []byte) error) error {
	blob, err := json.Marshal(sec)
	sec.Zero()
	if err != nil {
		return err
	}
	err = to(blob)
	crypto.Zero(blob)
	return err
}

func cmdUmount(c *cli.Context) error {
	if err := exactArgs(c, "MOUNTPOINT"); err != nil {
		return err
	}
	mnt, err := control.Canonical(c.Args().First())
	if err != nil {
		return err
	}
	ms, err := control.Mounts()
	if err != nil {
		return err
	}
	found := false
	for _, m := range ms {
		found = found || m.Mountpoint == mnt
	}
	if !found {
		return daemon.NotFoundError("%s is not an ezfs mount", c.Args().First())
	}
	sock := control.SocketPath(mnt)
	err = control.Call(sock, control.OpUnmount, nil, nil)
	if errors.Is(err, control.ErrNoDaemon) {
		// The daemon is gone (killed); the kernel still holds the mount.
		if err := unix.Unmount(mnt, 0); err != nil {
			return fmt.Errorf("unmount %s: %w", mnt, err)
		}
		return nil
	}
	if err != nil {
		return err
	}
	// Wait for the daemon to release the keystore and remove its socket.
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(sock); errors.Is(err, os.ErrNotExist) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s unmounted, but the daemon did not exit within 5s", mnt)
}

// socketFor picks the daemon for commands without a path: --mount or the only mount.
func socketFor(c *cli.Context) (string, error) {
	if m := c.String("mount"); m != "" {
		mt, _, err := control.FindMount(m)
		if err != nil {
			return "", err
		}
		return control.SocketPath(mt.Mountpoint), nil
	}
	mt, err := control.OnlyMount()
	if err != nil {
		return "", err
	}
	return control.SocketPath(mt.Mountpoint), nil
}

// socketForPath finds the daemon serving path and path's place in that mount.
func socketForPath(p string) (string, string, error) {
	mt, rel, err := control.FindMount(p)
	if err != nil {
		return "", "", err
	}
	return control.SocketPath(mt.Mountpoint), rel, nil
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func table() *tabwriter.Writer { return tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0) }

func ts(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05") }

func cmdStatus(c *cli.Context) error {
	var mounts []control.Mount
	if c.String("mount") != "" {
		m, _, err := control.FindMount(c.String("mount"))
		if err != nil {
			return err
		}
		mounts = []control.Mount{m}
	} else {
		var err error
		if mounts, err = control.Mounts(); err != nil {
			return err
		}
	}
	out := []control.Status{}
	for _, m := range mounts {
		var st control.Status
		if err := control.Call(control.SocketPath(m.Mountpoint), control.OpStatus, nil, &st); err != nil {
			st = control.Status{Mountpoint: m.Mountpoint, Backing: m.Backing, ProviderErr: "daemon not answering: " + err.Error()}
		}
		out = append(out, st)
	}
	if c.Bool("json") {
		return printJSON(out)
	}
	if len(out) == 0 {
		fmt.Println("no ezfs mounts")
		return nil
	}
	w := table()
	fmt.Fprintln(w, "MOUNTPOINT\tBACKING\tPID\tMAIN KEY\tPROVIDER\tHEALTH\tZONES\tCACHED KEYS\tOPTIONS")
	for _, s := range out {
		var hs []string
		for _, p := range s.Providers {
			who := p.Kind
			if p.MainKey != "" {
				who = fmt.Sprintf("%s v%d (%s)", p.MainKey, p.MainVersion, p.Kind)
			}
			h := who + " ok since " + ts(p.Since)
			if !p.OK {
				h = who + " ERROR since " + ts(p.Since) + ": " + p.Error
			}
			hs = append(hs, h)
		}
		health := strings.Join(hs, "; ")
		if len(hs) == 0 {
			health = "ERROR: " + s.ProviderErr
		}
		opts := strings.Join(s.Options, ",")
		if opts == "" {
			opts = "-"
		}
		fmt.Fprintf(w, "%s\t%s\t%d\tv%d\t%s\t%s\t%d\t%d\t%s\n", s.Mountpoint, s.Backing, s.PID, s.MainVersion, s.Provider, health, s.Zones, s.CachedKeys, opts)
	}
	return w.Flush()
}

func cmdKeyChange(what string) cli.ActionFunc {
	return func(c *cli.Context) error {
		if err := exactArgs(c, "NAME"); err != nil {
			return err
		}
		sock, err := socketFor(c)
		if err != nil {
			return err
		}
		op := control.OpKeyCreate
		if what == "roll" {
			op = control.OpKeyRoll
		}
		var ki control.KeyInfo
		args := control.KeyCreateArgs{Name: c.Args().First()}
		if what == "create" {
			args.MainKey = c.String("main-key")
		}
		if err := control.Call(sock, op, args, &ki); err != nil {
			return err
		}
		if c.Bool("json") {
			return printJSON(ki)
		}
		v := ki.Versions[len(ki.Versions)-1]
		fmt.Printf("key %s: version %d is current, wrapped by main key %s v%d (%s)\n", ki.Name, v.Version, v.MainKey, v.MainVersion, v.MainProvider)
		return nil
	}
}

func cmdKeySetMain(c *cli.Context) error {
	if err := exactArgs(c, "NAME", "MAIN-KEY"); err != nil {
		return err
	}
	sock, err := socketFor(c)
	if err != nil {
		return err
	}
	var ki control.KeyInfo
	if err := control.Call(sock, control.OpKeySetMain, control.KeyCreateArgs{Name: c.Args().Get(0), MainKey: c.Args().Get(1)}, &ki); err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(ki)
	}
	fmt.Printf("key %s: every version is wrapped by main key %s now\n", ki.Name, ki.MainKey)
	return nil
}

func cmdKeyList(c *cli.Context) error {
	sock, err := socketFor(c)
	if err != nil {
		return err
	}
	var keys []control.KeyInfo
	if err := control.Call(sock, control.OpKeyList, nil, &keys); err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(keys)
	}
	w := table()
	fmt.Fprintln(w, "NAME\tSTATE\tCURRENT\tVERSIONS\tCREATED\tZONES")
	for _, k := range keys {
		fmt.Fprintf(w, "%s\t%s\t@%d\t%d\t%s\t%s\n", k.Name, stateLine(k.KeyLifecycle), k.Current, len(k.Versions), ts(k.Created), strings.Join(k.Zones, ","))
	}
	return w.Flush()
}

func cmdKeyDescribe(c *cli.Context) error {
	if err := exactArgs(c, "NAME"); err != nil {
		return err
	}
	sock, err := socketFor(c)
	if err != nil {
		return err
	}
	var k control.KeyInfo
	if err := control.Call(sock, control.OpKeyDescribe, control.NameArgs{Name: c.Args().First()}, &k); err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(k)
	}
	fmt.Printf("key %s, created %s, current version @%d, main key %s, zones: %s\n", k.Name, ts(k.Created), k.Current, k.MainKey, strings.Join(k.Zones, ", "))
	fmt.Printf("state: %s\n", stateLine(k.KeyLifecycle))
	printPolicy(k)
	w := table()
	fmt.Fprintln(w, "VERSION\tCREATED\tWRAPPED BY\tSTATE\tFILES\t")
	for _, v := range k.Versions {
		cur, files := "", "?"
		if v.Current {
			cur = "(current)"
		}
		if v.Files != nil {
			files = fmt.Sprint(*v.Files)
		}
		fmt.Fprintf(w, "%s@%d\t%s\tmain key %s v%d (%s)\t%s\t%s\t%s\n", k.Name, v.Version, ts(v.Created), v.MainKey, v.MainVersion, v.MainProvider, v.State, files, cur)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if k.CountedAt != nil {
		fmt.Printf("file counts from the reencryption job finished %s; \"?\" means not counted yet\n", ts(*k.CountedAt))
	} else {
		fmt.Println("file counts: not counted yet (a reencryption job counts the files of its zone)")
	}
	return nil
}

func cmdZoneCreate(c *cli.Context) error {
	if err := exactArgs(c, "PATH"); err != nil {
		return err
	}
	if c.String("key") == "" {
		return daemon.UsageError("zone create needs --key NAME")
	}
	sock, rel, err := socketForPath(c.Args().First())
	if err != nil {
		return err
	}
	var z control.ZoneInfo
	if err := control.Call(sock, control.OpZoneCreate, control.ZoneCreateArgs{Path: rel, Key: c.String("key")}, &z); err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(z)
	}
	fmt.Printf("zone %s created with key %s (zone id %s)\n", c.Args().First(), z.Key, z.ID)
	return nil
}

func cmdZoneList(c *cli.Context) error {
	sock, err := socketFor(c)
	if err != nil {
		return err
	}
	var zs []control.ZoneInfo
	if err := control.Call(sock, control.OpZoneList, nil, &zs); err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(zs)
	}
	w := table()
	fmt.Fprintln(w, "PATH\tKEY\tZONE ID\tCREATED")
	for _, z := range zs {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", z.Path, z.Key, z.ID, ts(z.Created))
	}
	return w.Flush()
}

func cmdFileInfo(c *cli.Context) error {
	if err := exactArgs(c, "PATH"); err != nil {
		return err
	}
	sock, rel, err := socketForPath(c.Args().First())
	if err != nil {
		return err
	}
	var fi control.FileInfo
	if err := control.Call(sock, control.OpFileInfo, control.PathArgs{Path: rel}, &fi); err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(fi)
	}
	fmt.Printf("path:      %s\n", c.Args().First())
	if fi.Zone != "" {
		fmt.Printf("zone:      %s (id %s)\n", fi.Zone, fi.ZoneID)
	}
	if fi.Encrypted {
		fmt.Printf("key:       %s@%d\n", fi.Key, fi.KeyVersion)
		fmt.Printf("file id:   %s\n", fi.FileID)
		fmt.Printf("EDEK:      format v%d\n", fi.EDEKFormat)
	}
	if fi.Note != "" {
		fmt.Printf("note:      %s\n", fi.Note)
	}
	return nil
}
