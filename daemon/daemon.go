// Package daemon owns the life of an `ezfs mount` process: unlocking the keystore's
// providers, serving the file system, answering admin commands on the control socket,
// and shutting down cleanly on unmount or SIGTERM. It also starts itself in the
// background and reports when the mount is ready.
package daemon

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ezfs/ezfs/control"
	"github.com/ezfs/ezfs/crypto"
	"github.com/ezfs/ezfs/fs"
	"github.com/ezfs/ezfs/keystore"
	"github.com/ezfs/ezfs/keystore/providers"
	"github.com/ezfs/ezfs/zones"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Config describes one mount.
type Config struct {
	Backing    string // canonical
	Mountpoint string // canonical
	Keystore   string // canonical
	Secrets    providers.Secrets
	Mount      fs.MountOptions
	// KeyTTL bounds how long an unwrapped zone key stays cached unused (0: default).
	KeyTTL time.Duration
	// KMSPoll is how often providers are asked for versions made there (0: default).
	KMSPoll time.Duration
	// MinRetention is the shortest retention window `key delete` accepts (0: one
	// day); tests lower it (the hidden mount flag --test-min-retention).
	MinRetention time.Duration
	Logger       *log.Logger
	// Events takes the data path's errors as structured records (JSON logs); nil for
	// text.
	Events *slog.Logger
	// Ready is called once the mount and the control socket serve.
	Ready func()
	// Metrics is where Prometheus metrics are served (a Unix socket path or
	// HOST:PORT); empty for none.
	Metrics string
}

type daemon struct {
	cfg      Config
	log      *log.Logger
	store    *keystore.Store
	ring     *keystore.Keyring
	audit    *keystore.Audit
	registry *zones.Registry
	fsys     *fs.FS
	reenc    *zones.Reencryptor
	srv      *fuse.Server
	sched    *scheduler
	started  time.Time

	// adminMu serialises admin commands that change the zone table or main keys.
	adminMu sync.Mutex
	// sec are the mount's secrets, for providers opened or enrolled later.
	sec providers.Secrets
	// follow applies the keystore's changes, made here or through other hosts.
	follow keySync
}

// Run serves the mount until it is unmounted or the process gets SIGTERM/SIGINT.
// EZFS_CPUPROFILE=FILE writes a CPU profile of the whole run (for performance work).
func Run(cfg Config) error {
	if f := os.Getenv("EZFS_CPUPROFILE"); f != "" {
		out, err := os.Create(f)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		if err := pprof.StartCPUProfile(out); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer out.Close()
		defer pprof.StopCPUProfile()
	}
	tuneGC()
	d := &daemon{cfg: cfg, log: cfg.Logger, registry: zones.NewRegistry(), started: time.Now().UTC()}
	if d.log == nil {
		d.log = log.New(os.Stderr, "ezfs: ", log.LstdFlags)
	}
	minRot, err := minRotation()
	if err != nil {
		return err
	}
	d.sched = newScheduler(d, minRot)
	if d.store, err = keystore.Open(cfg.Keystore); err != nil {
		return err
	}
	defer d.store.Close()
	if d.audit, err = keystore.OpenAudit(cfg.Keystore); err != nil {
		return err
	}
	defer d.audit.Close()
	// The secrets stay for the daemon's life: a main key version whose provider does
	// not answer at mount is opened when it answers again.
	d.sec = cfg.Secrets
	defer d.sec.Zero()
	if len(d.sec.VaultToken) == 0 {
		d.sec.VaultToken = []byte(os.Getenv("VAULT_TOKEN"))
	}
	open := providers.Opener(d.sec)
	var met *metrics
	if cfg.Metrics != "" {
		met = newMetrics(d)
		open = met.opener(open)
	}
	d.ring = keystore.NewKeyringOpener(d.store, open, d.audit, cfg.KeyTTL)
	defer d.ring.Close()
	if err := d.checkMainKeys(context.Background(), ""); err != nil {
		return err
	}
	keys := &zones.Keys{Ring: d.ring}
	opts := fs.Options{Backing: cfg.Backing, Hidden: keystore.Folder(cfg.Keystore), Zones: d.registry, Keys: keys, Hooks: d, Logger: d.log, Events: cfg.Events}
	if met != nil {
		opts.Metrics = met
		keys.OnLookup = func() { met.nLookups.add(1) }
	}
	d.fsys, err = fs.New(opts)
	if err != nil {
		return err
	}
	d.reenc = zones.NewReencryptor(d.fsys.Root(), keys, d.fsys, d.audit, d.log)
	defer d.reenc.Close()
	if d.reenc.Lease, err = keystore.JobLease(); err != nil {
		return err
	}
	// The zone registry, and every change made to the keystore from now on by anyone
	// (keysync.go).
	stopWatch, err := d.startWatch()
	if err != nil {
		return err
	}
	defer stopWatch()
	if met != nil {
		stop, err := serveMetrics(cfg.Metrics, met)
		if err != nil {
			return err
		}
		defer stop()
	}
	ln, err := listen(cfg.Mountpoint)
	if err != nil {
		return err
	}
	sock := ln.Addr().String()
	if d.srv, err = d.fsys.Mount(cfg.Mountpoint, cfg.Mount); err != nil {
		ln.Close()
		os.Remove(sock)
		return err
	}
	ctl := control.Serve(ln, d.handle, Classify)
	d.audit.Action("mount", map[string]any{"backing": cfg.Backing, "mountpoint": cfg.Mountpoint}, nil)
	d.log.Printf("serving %s on %s", cfg.Backing, cfg.Mountpoint)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		for s := range sigs {
			d.log.Printf("%v: unmounting", s)
			if err := notify("STOPPING=1\nSTATUS=unmounting " + cfg.Mountpoint); err != nil {
				d.log.Printf("sd_notify: %v", err)
			}
			if err := d.unmount(); err != nil {
				d.log.Printf("unmount: %v", err)
			}
		}
	}()
	poll := cfg.KMSPoll
	if poll <= 0 {
		poll = DefaultKMSPoll
	}
	stopPoll := make(chan struct{})
	defer close(stopPoll)
	go d.pollRotations(poll, stopPoll)
	if err := d.reenc.Resume(d.registry); err != nil {
		d.log.Printf("resume reencryption jobs: %v", err)
	}
	go d.adoptJobs(stopPoll)
	d.sched.start()
	defer d.sched.close()
	if cfg.Ready != nil {
		cfg.Ready()
	}
	// The mount serves (WaitMount) and so does the control socket: tell systemd.
	if err := notify(fmt.Sprintf("READY=1\nMAINPID=%d\nSTATUS=serving %s on %s", os.Getpid(), cfg.Backing, cfg.Mountpoint)); err != nil {
		d.log.Printf("sd_notify: %v", err)
	}
	d.srv.Wait()
	signal.Stop(sigs)
	ctl.Close()
	os.Remove(sock)
	d.audit.Action("unmount", map[string]any{"mountpoint": cfg.Mountpoint}, nil)
	d.log.Printf("unmounted %s", cfg.Mountpoint)
	return nil
}

// unmount detaches the mount; a busy mount stays as it is.
func (d *daemon) unmount() error {
	err := d.srv.Unmount()
	if err != nil {
		// go-fuse passes fusermount's message on as text: type it here, at the source.
		if strings.Contains(err.Error(), "busy") {
			return Reword(syscall.EBUSY, "unmount %s: %s is busy: close the files open in it first", d.cfg.Mountpoint, d.cfg.Mountpoint)
		}
		return fmt.Errorf("unmount %s: %w", d.cfg.Mountpoint, err)
	}
	return nil
}

// listen opens the control socket; a socket left by a dead daemon is replaced, one
// that answers means the mountpoint is served already.
func listen(mountpoint string) (*net.UnixListener, error) {
	if err := os.MkdirAll(control.SocketDir, 0o700); err != nil {
		return nil, fmt.Errorf("control socket folder: %w", err)
	}
	sock := control.SocketPath(mountpoint)
	if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("%s is already served by an ezfs daemon", mountpoint)
	}
	os.Remove(sock)
	old := syscall.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	return ln, nil
}

// Renamed implements fs.Hooks: the zones in a renamed directory follow it.
func (d *daemon) Renamed(from, to string) {
	for _, e := range d.registry.Renamed(from, to) {
		d.savePath(e, "zone.move")
	}
}

// ZoneFound implements fs.Hooks: a zone root was found at a path the keystore did not
// have (moved on the backing disk, or first seen with its inode).
func (d *daemon) ZoneFound(z *zones.Zone, rel string) {
	if e := d.registry.ByID(z.ID); e != nil {
		e.Path = rel
		d.registry.Add(*e)
		d.savePath(*e, "zone.found")
	}
}

// savePath records the place of zone e in the keystore.
func (d *daemon) savePath(e zones.Entry, action string) {
	rec := &keystore.Zone{ID: e.Zone.IDString(), Path: e.Path, Key: e.Zone.Key, Created: d.zoneCreated(e.Zone), Dev: e.Dev, Ino: e.Ino}
	err := d.store.PutZone(rec)
	d.audit.Action(action, map[string]any{"zone": rec.ID, "path": "/" + e.Path}, err)
	if err != nil {
		d.log.Printf("record the path of zone %s: %v", rec.ID, err)
	}
}

// ZoneRemoved implements fs.Hooks.
func (d *daemon) ZoneRemoved(z *zones.Zone) {
	d.registry.Remove(z.ID)
	err := d.store.DeleteZone(z.IDString())
	d.audit.Action("zone.remove", map[string]any{"zone": z.IDString()}, err)
	d.changed() // not at once: this runs inside a FUSE request
}

func (d *daemon) zoneCreated(z *zones.Zone) time.Time {
	zs, _ := d.store.Zones()
	for _, r := range zs {
		if r.ID == z.IDString() {
			return r.Created
		}
	}
	return time.Now().UTC()
}

func decode[T any](raw json.RawMessage) (T, error) {
	var v T
	if len(raw) == 0 {
		return v, nil
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, UsageError("bad request arguments: %v", err)
	}
	return v, nil
}

func (d *daemon) handle(ctx context.Context, op string, raw json.RawMessage) (any, error) {
	switch op {
	case control.OpStatus:
		return d.status(ctx)
	case control.OpDebugMemory:
		return d.memory(), nil
	case control.OpKeyCreate, control.OpKeyRoll:
		a, err := decode[control.KeyCreateArgs](raw)
		if err != nil {
			return nil, err
		}
		return d.keyChange(op, a)
	case control.OpKeySetMain:
		a, err := decode[control.KeyCreateArgs](raw)
		if err != nil {
			return nil, err
		}
		return d.keySetMain(ctx, a)
	case control.OpKeyList:
		zks, err := d.store.ZoneKeys()
		if err != nil {
			return nil, err
		}
		out := []control.KeyInfo{}
		for _, zk := range zks {
			ki, err := d.keyInfo(zk)
			if err != nil {
				return nil, err
			}
			out = append(out, *ki)
		}
		return out, nil
	case control.OpKeyDescribe:
		a, err := decode[control.NameArgs](raw)
		if err != nil {
			return nil, err
		}
		zk, err := d.store.ZoneKey(a.Name)
		if err != nil {
			return nil, keyError(a.Name, err)
		}
		return d.keyInfo(zk)
	case control.OpKeyPolicy:
		a, err := decode[control.KeyPolicyArgs](raw)
		if err != nil {
			return nil, err
		}
		return d.keyPolicy(a)
	case control.OpKeystoreBackup:
		a, err := decode[control.BackupArgs](raw)
		if err != nil {
			return nil, err
		}
		return d.backup(a)
	case control.OpKeyDisable, control.OpKeyEnable, control.OpKeyDelete, control.OpKeyRecover, control.OpKeyPurge, control.OpKeyRetire:
		return d.keyLifecycle(ctx, op, raw)
	case control.OpZoneCreate:
		a, err := decode[control.ZoneCreateArgs](raw)
		if err != nil {
			return nil, err
		}
		zi, err := d.createZone(a.Path, a.Key)
		fields := map[string]any{"path": "/" + zones.Clean(a.Path), "key": a.Key}
		if zk, kerr := d.store.ZoneKey(a.Key); kerr == nil {
			fields["main_key"] = zk.MainKey
		}
		d.audit.Action(op, fields, err)
		return zi, err
	case control.OpZoneList:
		return d.zoneList()
	case control.OpFileInfo:
		a, err := decode[control.PathArgs](raw)
		if err != nil {
			return nil, err
		}
		return d.fileInfo(a.Path)
	case control.OpUnmount:
		return nil, d.unmount()
	case control.OpReencryptStart, control.OpReencryptCancel, control.OpReencryptStatus:
		a, err := decode[control.ReencryptArgs](raw)
		if err != nil {
			return nil, err
		}
		return d.reencrypt(op, a)
	case control.OpKMSShow, control.OpKMSRotate, control.OpKMSSet, control.OpKMSRewrap, control.OpKMSRetire,
		control.OpKMSCreate, control.OpKMSCheck:
		a, err := decode[control.KMSArgs](raw)
		if err != nil {
			return nil, err
		}
		defer crypto.Zero(a.Passphrase)
		defer crypto.Zero(a.PIN)
		return d.kms(ctx, op, a)
	}
	return nil, UsageError("unknown operation %q", op)
}

// keyChange creates (under its main key) or rolls a zone key.
func (d *daemon) keyChange(op string, a control.KeyCreateArgs) (*control.KeyInfo, error) {
	var zk *keystore.ZoneKey
	var err error
	fields := map[string]any{"key": a.Name}
	if op == control.OpKeyCreate {
		fields["main_key"] = mainName(a.MainKey)
		if _, err := d.store.CurrentMainKey(a.MainKey); err != nil {
			err = Reword(err, "main key %q does not exist (see 'ezfs kms show')", mainName(a.MainKey))
			d.audit.Action(op, fields, err)
			return nil, err
		}
		zk, err = d.store.CreateZoneKey(a.Name, a.MainKey)
	} else {
		if cur, kerr := d.store.ZoneKey(a.Name); kerr == nil {
			fields["main_key"] = cur.MainKey // a refused roll names it too
		}
		zk, err = d.store.RollZoneKey(a.Name)
		d.sched.rearm()
	}
	if err == nil {
		fields["version"] = zk.Latest().Version
		fields["main_key"], fields["main_version"] = zk.Latest().MainName, zk.Latest().MainVersion
	}
	d.audit.Action(op, fields, err)
	if err != nil {
		return nil, keyError(a.Name, err)
	}
	return d.keyInfo(zk)
}

// keySetMain moves zone key a.Name to main key a.MainKey.
func (d *daemon) keySetMain(ctx context.Context, a control.KeyCreateArgs) (*control.KeyInfo, error) {
	d.adminMu.Lock()
	defer d.adminMu.Unlock()
	n, err := d.ring.SetMain(ctx, a.Name, mainName(a.MainKey))
	d.audit.Action(control.OpKeySetMain, map[string]any{"key": a.Name, "main_key": mainName(a.MainKey), "rewrapped": n}, err)
	if err != nil {
		return nil, err
	}
	zk, err := d.store.ZoneKey(a.Name)
	if err != nil {
		return nil, err
	}
	return d.keyInfo(zk)
}

func keyError(name string, err error) error {
	switch {
	case errors.Is(err, keystore.ErrKeyNotFound):
		return Reword(err, "key %q does not exist", name)
	case errors.Is(err, keystore.ErrReserved):
		return Reword(err, "key %q exists, deleted: its name stays reserved ('ezfs key recover %s' brings it back)", name, name)
	case errors.Is(err, keystore.ErrExists):
		return Reword(err, "key %q already exists", name)
	}
	return err
}

func (d *daemon) keyInfo(zk *keystore.ZoneKey) (*control.KeyInfo, error) {
	ki := &control.KeyInfo{Name: zk.Name, MainKey: zk.MainKey, Created: zk.Created, Current: zk.Latest().Version, Zones: []string{},
		KeyLifecycle: lifecycleOf(zk)}
	d.policyInfo(zk, ki)
	for _, e := range d.registry.List() {
		if e.Zone.Key == zk.Name {
			ki.Zones = append(ki.Zones, "/"+e.Path)
		}
	}
	counts, at := d.fileCounts(zk.Name)
	if counts != nil {
		ki.CountedAt = &at
	}
	for _, v := range zk.Versions {
		mk, err := d.store.MainKey(v.Main())
		if err != nil {
			return nil, err
		}
		ki.Versions = append(ki.Versions, control.KeyVersion{
			Version: v.Version, Created: v.Created, MainKey: v.MainName, MainVersion: v.MainVersion, MainProvider: mk.Provider,
			State: v.VersionState(), Current: v.Version == ki.Current,
		})
		if counts != nil {
			n := counts[v.Version]
			ki.Versions[len(ki.Versions)-1].Files = &n
		}
	}
	return ki, nil
}

func (d *daemon) createZone(path, key string) (*control.ZoneInfo, error) {
	d.adminMu.Lock()
	defer d.adminMu.Unlock()
	rel := zones.Clean(path)
	if key == "" {
		return nil, UsageError("a zone needs a key: --key NAME")
	}
	if err := d.registry.CheckNew(rel); err != nil {
		return nil, err
	}
	zk, err := d.store.ZoneKey(key)
	if err != nil {
		return nil, keyError(key, err)
	}
	if st := zk.KeyState(); st != keystore.StateActive {
		return nil, fmt.Errorf("key %q is %s: a new zone needs an active key: %w", key, st, keystore.ErrKeyState)
	}
	z := &zones.Zone{Key: key}
	if _, err := rand.Read(z.ID[:]); err != nil {
		return nil, err
	}
	dev, ino, err := d.fsys.MakeZone(rel, z)
	if err != nil {
		return nil, err
	}
	rec := &keystore.Zone{ID: z.IDString(), Path: rel, Key: key, Created: time.Now().UTC(), Dev: dev, Ino: ino}
	if err := d.store.PutZone(rec); err != nil {
		if uerr := d.fsys.UnmakeZone(rel); uerr != nil {
			d.log.Printf("take the marker off /%s: %v", rel, uerr)
		}
		return nil, err
	}
	d.registry.Add(zones.Entry{Zone: z, Path: rel, Dev: dev, Ino: ino})
	d.applyChange()
	return &control.ZoneInfo{ID: rec.ID, Path: "/" + rel, Key: key, Created: rec.Created}, nil
}

// zoneList lists the registered zones, each with its health.
func (d *daemon) zoneList() ([]control.ZoneInfo, error) {
	out := []control.ZoneInfo{}
	for _, e := range d.registry.List() {
		out = append(out, control.ZoneInfo{ID: e.Zone.IDString(), Path: "/" + e.Path, Key: e.Zone.Key,
			Created: d.zoneCreated(e.Zone), Damaged: d.fsys.ZoneHealth(e)})
	}
	return out, nil
}

func (d *daemon) status(ctx context.Context) (*control.Status, error) {
	st := &control.Status{
		PID: os.Getpid(), Mountpoint: d.cfg.Mountpoint, Backing: d.cfg.Backing, Keystore: d.cfg.Keystore,
		Started: d.started, Zones: len(d.registry.List()), CachedKeys: d.ring.Cached(), Options: d.cfg.Mount.Options,
	}
	zs, err := d.zoneList()
	if err != nil {
		return nil, err
	}
	for _, z := range zs {
		if z.Damaged != "" {
			st.DamagedZones = append(st.DamagedZones, z)
		}
	}
	def, err := d.store.CurrentMainKey(keystore.DefaultMain)
	if err != nil {
		return nil, err
	}
	st.MainVersion, st.Provider = def.Version, def.Provider
	mks, err := d.store.MainKeys()
	if err != nil {
		return nil, err
	}
	for _, mk := range mks {
		if mk.State != keystore.StateActive {
			continue
		}
		ps := d.health(ctx, mk)
		st.Providers = append(st.Providers, ps)
		if mk.Ref() == def.Ref() {
			st.ProviderOK, st.ProviderErr = ps.OK, ps.Error
		}
	}
	return st, nil
}

// health asks mk's provider for its status now.
func (d *daemon) health(ctx context.Context, mk *keystore.MainKey) control.ProviderStatus {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := d.ring.Check(sctx, mk)
	ps := control.ProviderStatus{Kind: mk.Provider, OK: err == nil, MainKey: mk.Name, MainVersion: mk.Version}
	if err != nil {
		ps.Error = err.Error()
	}
	if h, ok := d.ring.Health(mk.Ref()); ok {
		ps.Since = h.Since
	}
	return ps
}

func (d *daemon) fileInfo(path string) (*control.FileInfo, error) {
	rel := zones.Clean(path)
	fi := &control.FileInfo{Path: "/" + rel}
	desc, err := d.fsys.Describe(rel)
	if err != nil {
		return nil, fmt.Errorf("/%s: %w", rel, err)
	}
	e := desc.Zone
	if desc.Damaged != "" {
		fi.Note = "in a damaged zone, not served (its files answer EIO): " + desc.Damaged
	}
	if e == nil && desc.Damaged == "" {
		fi.Note = "outside any zone: stored in the clear"
		return fi, nil
	}
	if e == nil {
		return fi, nil
	}
	fi.Zone, fi.ZoneID, fi.Key = "/"+e.Path, e.Zone.IDString(), e.Zone.Key
	if desc.Stat.Mode&unix.S_IFMT != unix.S_IFREG {
		fi.Note = "not a regular file: names and directories are not encrypted"
		return fi, nil
	}
	edek, err := crypto.ParseEDEK(desc.EDEK)
	if err != nil {
		return nil, fmt.Errorf("/%s: %w", rel, err)
	}
	fi.Encrypted, fi.Key, fi.KeyVersion = true, edek.KeyNameIn(e.Zone.Key), edek.KeyVersion
	fi.FileID, fi.EDEKFormat = fmt.Sprintf("%x", edek.FileID[:]), edek.Format
	return fi, nil
}
