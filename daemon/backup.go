package daemon

import (
	"path/filepath"
	"strings"

	"github.com/ezfs/ezfs/control"
	"github.com/ezfs/ezfs/keystore"
)

// backup writes a consistent copy of the keystore to a.Path (`keystore backup`),
// never inside the mount, the backing directory or the keystore folder.
func (d *daemon) backup(a control.BackupArgs) (*control.BackupResult, error) {
	p := filepath.Clean(a.Path)
	if !filepath.IsAbs(p) {
		return nil, UsageError("keystore backup: %q is not an absolute path", a.Path)
	}
	if p == d.cfg.Mountpoint || strings.HasPrefix(p, d.cfg.Mountpoint+"/") {
		return nil, UsageError("keystore backup: %s is inside the mount %s; write it outside (on another disk)", p, d.cfg.Mountpoint)
	}
	root := d.fsys.Root() // the backing directory as the mount opened it
	n, err := d.store.Backup(p, a.Force, keystore.Place{Name: d.cfg.Backing, Dev: root.Dev, Ino: root.Ino})
	d.audit.Action(control.OpKeystoreBackup, map[string]any{"path": p, "bytes": n, "force": a.Force}, err)
	if err != nil {
		return nil, err
	}
	d.log.Printf("keystore backed up to %s (%d bytes)", p, n)
	return &control.BackupResult{Path: p, Bytes: n}, nil
}
