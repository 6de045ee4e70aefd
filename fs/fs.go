// Package fs owns the go-fuse node tree of an ezfs mount: a passthrough of the backing
// directory outside zones, and inside zones regular files whose contents are sealed in
// 4 KiB AES-256-GCM blocks under a per-file data key kept (wrapped) in an xattr.
//
// Every backing call goes through package backing, from the descriptor of the backing
// root or of a node's directory: no backing path is ever resolved from "/".
//
// Zone membership is a property of the node tree: a directory that the zone registry
// knows by device and inode, and whose marker agrees, starts a zone, and every node
// below it belongs to it. Renames and hard links that would cross a zone boundary
// fail with EXDEV.
//
// Files, by concern: node.go (the node and its ways to the backing object),
// node_lookup.go, node_dir_ops.go, node_names.go (links, renames, removals),
// node_attr.go, node_xattr.go, node_open_create.go, zone.go, file.go (open zone
// files), file_allocate.go, file_plain.go, content.go (the block format on a
// descriptor), errno.go, dircache.go, raw.go, lock.go, caller.go, mount.go.
package fs

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/ezfs/ezfs/backing"
	"github.com/ezfs/ezfs/crypto"
	"github.com/ezfs/ezfs/zones"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"
)

// FileKeys seals and opens per-file data keys; zones.Keys implements it.
type FileKeys interface {
	NewFileKey(ctx context.Context, z *zones.Zone) (dek, edek []byte, id crypto.FileID, err error)
	OpenFileKey(ctx context.Context, z *zones.Zone, edek []byte) (dek []byte, e *crypto.EDEK, err error)
	// Usable is nil when zone key name may serve data; every read, write, open and
	// create in a zone asks, so it must be cheap.
	Usable(name string) error
}

// Hooks are told how the zones move, so the keystore's zone table follows.
type Hooks interface {
	// Renamed: the directory at from (outside zones, or a zone root) is now at to.
	Renamed(from, to string)
	// ZoneRemoved: the root of z was removed.
	ZoneRemoved(z *zones.Zone)
	// ZoneFound: the root of the zone was looked up at rel, which is not the path
	// the registry had (it was moved on the backing disk).
	ZoneFound(z *zones.Zone, rel string)
}

// Options configure a file system.
type Options struct {
	// Backing is the absolute path of the backing directory.
	Backing string
	// Hidden is a directory inside Backing that the mount must not show (the keystore
	// folder), matched by device and inode; empty for none.
	Hidden string
	// Zones is the zone registry, authoritative for what is a zone; nil for none.
	Zones  *zones.Registry
	Keys   FileKeys
	Hooks  Hooks
	Logger *log.Logger
	// Events, when set, gets the data path's errors as structured records (errno,
	// path, zone, key version) instead of lines on Logger: --log-format json.
	Events *slog.Logger
	// Metrics counts zone traffic and authentication failures; nil for none.
	Metrics Metrics
}

// Metrics is told about zone file traffic (the daemon exports it). Zones are named by
// ID, which renames do not change.
type Metrics interface {
	// ZoneRead and ZoneWrite: n plaintext bytes read from or written to a zone file.
	ZoneRead(zone string, n int)
	ZoneWrite(zone string, n int)
	// AuthFailure: a block or record of a zone file failed authentication.
	AuthFailure(zone string)
	// Request: a FUSE request of operation op was answered after d, ok or with an error.
	Request(op string, d time.Duration, ok bool)
}

// FS is one mounted backing directory.
type FS struct {
	root  *backing.Root
	keys  FileKeys
	hooks Hooks
	zones *zones.Registry
	log   *log.Logger
	// events is Options.Events; nil for text logs.
	events *slog.Logger
	met    Metrics
	top    *node
	// noPassthrough, killPriv and shared are set once, before the mount serves.
	// killPriv: the daemon drops set-user-ID on marked writes (FUSE_HANDLE_KILLPRIV_V2).
	// shared: several users reach the mount, and the kernel checks permissions.
	noPassthrough, killPriv, shared bool
	// sharedStorage: other daemons change the backing directory too (shared.go); set
	// once, before the mount serves.
	sharedStorage bool

	// hidden is the device and inode of the hidden folder, and hiddenParent its parent
	// directory's; hasHidden says there is one.
	hidden, hiddenParent [2]uint64
	hasHidden            bool

	// zoneMu orders marking a directory as a zone root (write side) against every
	// operation that creates or moves names (read side), so no file is created in a
	// directory while it becomes a zone.
	zoneMu sync.RWMutex

	// live maps inode numbers to the states of the zone files open (see state), so the
	// reencrypt worker can take a file's content lock. Guarded by liveMu, which also
	// guards the states' reference counts.
	liveMu sync.Mutex
	live   map[uint64]*state
	// stripes stand in for the content lock of files that are not open.
	stripes [64]sync.Mutex
	// moves counts renames and hard links per zone (crypto.ZoneID → *atomic.Uint64).
	moves sync.Map
	// dirs keeps descriptors of recently used directories.
	dirs dirCache
}

// New builds the file system for a backing directory.
func New(o Options) (*FS, error) {
	root, err := backing.OpenRoot(o.Backing)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := backing.Stat(root.Fd(), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		root.Close()
		return nil, fmt.Errorf("backing dir %s: not a directory", o.Backing)
	}
	f := &FS{root: root, keys: o.Keys, hooks: o.Hooks, zones: o.Zones, log: o.Logger, events: o.Events, met: o.Metrics, live: map[uint64]*state{}}
	if f.log == nil {
		f.log = log.New(os.Stderr, "ezfs: ", log.LstdFlags)
	}
	if f.zones == nil {
		f.zones = zones.NewRegistry()
	}
	if o.Hidden != "" {
		// The admin named this folder; it is hidden by identity, so renaming it or an
		// ancestor, or a case-insensitive spelling of its name, shows nothing.
		var hs, ps unix.Stat_t
		if unix.Stat(o.Hidden, &hs) == nil && unix.Stat(filepath.Join(o.Hidden, ".."), &ps) == nil {
			f.hidden, f.hiddenParent, f.hasHidden = [2]uint64{hs.Dev, hs.Ino}, [2]uint64{ps.Dev, ps.Ino}, true
		}
	}
	f.top = &node{fsys: f}
	return f, nil
}

// Root is the backing directory the file system serves.
func (f *FS) Root() *backing.Root { return f.root }

// isHidden reports whether st is the hidden folder.
func (f *FS) isHidden(st *unix.Stat_t) bool {
	return f.hasHidden && st.Dev == f.hidden[0] && st.Ino == f.hidden[1]
}

// sysStat is st as go-fuse takes it: the same kernel struct under its syscall name.
func sysStat(st *unix.Stat_t) *syscall.Stat_t { return (*syscall.Stat_t)(unsafe.Pointer(st)) }

func (f *FS) stableAttr(st *unix.Stat_t) gofs.StableAttr {
	// As go-fuse's loopback: mix the device into the inode number so that a backing
	// tree spanning several file systems has no collisions, and keep plain inode
	// numbers on the backing dir's own device.
	swapped := (st.Dev << 32) | (st.Dev >> 32)
	swappedRoot := (f.root.Dev << 32) | (f.root.Dev >> 32)
	return gofs.StableAttr{Mode: st.Mode & syscall.S_IFMT, Ino: (swapped ^ swappedRoot) ^ st.Ino, Gen: 1}
}

// LockFile takes the content lock of the backing file st describes: its state's lock
// if the file is open (the state is held meanwhile), else its inode's stripe lock,
// which an open of the file takes too before it loads (acquire).
func (f *FS) LockFile(st *unix.Stat_t) func() {
	ino := f.stableAttr(st).Ino
	m := f.stripe(ino)
	m.Lock()
	f.liveMu.Lock()
	s := f.live[ino]
	if s != nil {
		s.refs++
	}
	f.liveMu.Unlock()
	if s == nil {
		return m.Unlock
	}
	m.Unlock()
	s.mu.Lock()
	return func() {
		s.mu.Unlock()
		s.release()
	}
}

// stripe is the lock that stands in for the content lock of inode ino while it has
// no state.
func (f *FS) stripe(ino uint64) *sync.Mutex { return &f.stripes[ino%uint64(len(f.stripes))] }

// Moves counts the renames and hard links made in zone since the mount.
func (f *FS) Moves(zone crypto.ZoneID) uint64 {
	if c, ok := f.moves.Load(zone); ok {
		return c.(*atomic.Uint64).Load()
	}
	return 0
}

func (f *FS) moved(z *zones.Zone) {
	if z == nil {
		return
	}
	c, _ := f.moves.LoadOrStore(z.ID, new(atomic.Uint64))
	c.(*atomic.Uint64).Add(1)
}
