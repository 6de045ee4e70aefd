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
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"sort"
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
	Logger     *log.Logger
	// Ready is called once the mount and the control socket serve.
	Ready func()
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
	started  time.Time

	// adminMu serialises admin commands that change the zone table.
	adminMu sync.Mutex
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
	d := &daemon{cfg: cfg, log: cfg.Logger, registry: zones.NewRegistry(), started: time.Now().UTC()}
	if d.log == nil {
		d.log = log.New(os.Stderr, "ezfs: ", log.LstdFlags)
	}
	var err error
	if d.store, err = keystore.Open(cfg.Keystore); err != nil {
		return err
	}
	defer d.store.Close()
	mks, err := d.store.MainKeys()
	if err != nil {
		return err
	}
	provs, err := providers.Open(context.Background(), mks, cfg.Secrets)
	cfg.Secrets.Zero()
	if err != nil {
		return err
	}
	if d.audit, err = keystore.OpenAudit(cfg.Keystore); err != nil {
		return err
	}
	defer d.audit.Close()
	d.ring = keystore.NewKeyring(d.store, provs, d.audit, 0)
	defer d.ring.Close()
	if err := d.loadZones(); err != nil {
		return err
	}
	keys := &zones.Keys{Ring: d.ring}
	d.fsys, err = fs.New(fs.Options{
		Backing: cfg.Backing, Hidden: cfg.Keystore, Keys: keys, Hooks: d, Logger: d.log,
	})
	if err != nil {
		return err
	}
	d.reenc = zones.NewReencryptor(cfg.Backing, keys, d.fsys, d.audit, d.log)
	defer d.reenc.Close()
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
	ctl := control.Serve(ln, d.handle)
	d.audit.Action("mount", map[string]any{"backing": cfg.Backing, "mountpoint": cfg.Mountpoint}, nil)
	d.log.Printf("serving %s on %s", cfg.Backing, cfg.Mountpoint)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		for s := range sigs {
			d.log.Printf("%v: unmounting", s)
			if err := d.unmount(); err != nil {
				d.log.Printf("unmount: %v", err)
			}
		}
	}()
	if err := d.reenc.Resume(d.registry); err != nil {
		d.log.Printf("resume reencryption jobs: %v", err)
	}
	if cfg.Ready != nil {
		cfg.Ready()
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

// loadZones fills the registry from the keystore and checks each zone root's marker.
func (d *daemon) loadZones() error {
	zs, err := d.store.Zones()
	if err != nil {
		return err
	}
	for _, z := range zs {
		id, err := zones.ParseID(z.ID)
		if err != nil {
			return err
		}
		zone := &zones.Zone{ID: id, Key: z.Key}
		d.registry.Add(zone, z.Path)
		got, err := fs.ZoneOf(filepath.Join(d.cfg.Backing, z.Path))
		if err != nil || got == nil || got.ID != id {
			d.log.Printf("WARNING: zone %s (key %s) has no valid marker at /%s: %v", z.ID, z.Key, z.Path, err)
		}
	}
	return nil
}

// ZoneMoved implements fs.Hooks.
func (d *daemon) ZoneMoved(z *zones.Zone, from, to string) {
	d.registry.Move(from, to)
	err := d.store.PutZone(&keystore.Zone{ID: z.IDString(), Path: to, Key: z.Key, Created: d.zoneCreated(z)})
	d.audit.Action("zone.move", map[string]any{"zone": z.IDString(), "from": "/" + from, "to": "/" + to}, err)
	if err != nil {
		d.log.Printf("record move of zone %s: %v", z.IDString(), err)
	}
}

// ZoneRemoved implements fs.Hooks.
func (d *daemon) ZoneRemoved(z *zones.Zone, path string) {
	d.registry.Remove(path)
	err := d.store.DeleteZone(z.IDString())
	d.audit.Action("zone.remove", map[string]any{"zone": z.IDString(), "path": "/" + path}, err)
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
	err := json.Unmarshal(raw, &v)
	return v, err
}

func (d *daemon) handle(ctx context.Context, op string, raw json.RawMessage) (any, error) {
	switch op {
	case control.OpStatus:
		return d.status(ctx)
	case control.OpKeyCreate, control.OpKeyRoll:
		a, err := decode[control.NameArgs](raw)
		if err != nil {
			return nil, err
		}
		var zk *keystore.ZoneKey
		if op == control.OpKeyCreate {
			zk, err = d.store.CreateZoneKey(a.Name)
		} else {
			zk, err = d.store.RollZoneKey(a.Name)
		}
		fields := map[string]any{"key": a.Name}
		if err == nil {
			fields["version"] = zk.Latest().Version
			fields["main_version"] = zk.Latest().MainVersion
		}
		d.audit.Action(op, fields, err)
		if err != nil {
			return nil, keyError(a.Name, err)
		}
		return d.keyInfo(zk)
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
	case control.OpZoneCreate:
		a, err := decode[control.ZoneCreateArgs](raw)
		if err != nil {
			return nil, err
		}
		zi, err := d.createZone(a.Path, a.Key)
		d.audit.Action(op, map[string]any{"path": "/" + zones.Clean(a.Path), "key": a.Key}, err)
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
	case control.OpKMSShow, control.OpKMSRotate, control.OpKMSSet, control.OpKMSRewrap, control.OpKMSRetire:
		a, err := decode[control.KMSArgs](raw)
		if err != nil {
			return nil, err
		}
		defer crypto.Zero(a.Passphrase)
		defer crypto.Zero(a.PIN)
		return d.kms(ctx, op, a)
	}
	return nil, fmt.Errorf("unknown operation %q", op)
}

func keyError(name string, err error) error {
	switch {
	case errors.Is(err, keystore.ErrKeyNotFound):
		return fmt.Errorf("key %q does not exist", name)
	case errors.Is(err, keystore.ErrExists):
		return fmt.Errorf("key %q already exists", name)
	}
	return err
}

func (d *daemon) keyInfo(zk *keystore.ZoneKey) (*control.KeyInfo, error) {
	ki := &control.KeyInfo{Name: zk.Name, Created: zk.Created, Current: zk.Latest().Version, Zones: []string{}}
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
		mk, err := d.store.MainKey(v.MainVersion)
		if err != nil {
			return nil, err
		}
		ki.Versions = append(ki.Versions, control.KeyVersion{
			Version: v.Version, Created: v.Created, MainVersion: v.MainVersion, MainProvider: mk.Provider,
			State: v.State, Current: v.Version == ki.Current,
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
		return nil, errors.New("a zone needs a key: --key NAME")
	}
	if err := d.registry.CheckNew(rel); err != nil {
		return nil, err
	}
	if _, err := d.store.ZoneKey(key); err != nil {
		return nil, keyError(key, err)
	}
	z := &zones.Zone{Key: key}
	if _, err := rand.Read(z.ID[:]); err != nil {
		return nil, err
	}
	if err := d.fsys.MakeZone(rel, z); err != nil {
		return nil, err
	}
	rec := &keystore.Zone{ID: z.IDString(), Path: rel, Key: key, Created: time.Now().UTC()}
	if err := d.store.PutZone(rec); err != nil {
		_ = unix.Lremovexattr(filepath.Join(d.cfg.Backing, rel), zones.XattrZone)
		return nil, err
	}
	d.registry.Add(z, rel)
	return &control.ZoneInfo{ID: rec.ID, Path: "/" + rel, Key: key, Created: rec.Created}, nil
}

func (d *daemon) zoneList() ([]control.ZoneInfo, error) {
	zs, err := d.store.Zones()
	if err != nil {
		return nil, err
	}
	out := []control.ZoneInfo{}
	for _, z := range zs {
		out = append(out, control.ZoneInfo{ID: z.ID, Path: "/" + z.Path, Key: z.Key, Created: z.Created})
	}
	return out, nil
}

func (d *daemon) fileInfo(path string) (*control.FileInfo, error) {
	rel := zones.Clean(path)
	fi := &control.FileInfo{Path: "/" + rel}
	p := filepath.Join(d.cfg.Backing, rel)
	if r, err := filepath.Rel(d.cfg.Keystore, p); err == nil && (r == "." || !strings.HasPrefix(r, "..")) {
		return nil, fmt.Errorf("/%s: no such file or directory", rel)
	}
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return nil, fmt.Errorf("/%s: %w", rel, err)
	}
	e := d.registry.Containing(rel)
	if e == nil {
		fi.Note = "outside any zone: stored in the clear"
		return fi, nil
	}
	fi.Zone, fi.ZoneID, fi.Key = "/"+e.Path, e.Zone.IDString(), e.Zone.Key
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		fi.Note = "not a regular file: names and directories are not encrypted"
		return fi, nil
	}
	buf := make([]byte, 512)
	sz, err := unix.Lgetxattr(p, zones.XattrEDEK, buf)
	if err != nil {
		return nil, fmt.Errorf("/%s: read EDEK: %w", rel, err)
	}
	edek, err := crypto.ParseEDEK(buf[:sz])
	if err != nil {
		return nil, fmt.Errorf("/%s: %w", rel, err)
	}
	fi.Encrypted, fi.Key, fi.KeyVersion = true, edek.KeyName, edek.KeyVersion
	fi.FileID = fmt.Sprintf("%x", edek.FileID[:])
	return fi, nil
}

func (d *daemon) status(ctx context.Context) (*control.Status, error) {
	st := &control.Status{
		PID: os.Getpid(), Mountpoint: d.cfg.Mountpoint, Backing: d.cfg.Backing, Keystore: d.cfg.Keystore,
		Started: d.started, Zones: len(d.registry.List()), CachedKeys: d.ring.Cached(),
	}
	mk, err := d.store.CurrentMainKey()
	if err != nil {
		return nil, err
	}
	st.MainVersion, st.Provider = mk.Version, mk.Provider
	provs := d.ring.Providers()
	kinds := make([]string, 0, len(provs))
	for kind := range provs {
		kinds = append(kinds, kind)
	}
	sort.Strings(kinds)
	for _, kind := range kinds {
		ps := control.ProviderStatus{Kind: kind, OK: true}
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := provs[kind].Status(sctx); err != nil {
			ps.OK, ps.Error = false, err.Error()
		}
		cancel()
		st.Providers = append(st.Providers, ps)
		if kind == mk.Provider {
			st.ProviderOK, st.ProviderErr = ps.OK, ps.Error
		}
	}
	if provs[mk.Provider] == nil {
		st.ProviderErr = "provider not configured"
	}
	return st, nil
}
