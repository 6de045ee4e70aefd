package fs

import (
	"context"
	"sync/atomic"
	"syscall"

	"github.com/ezfs/ezfs/backing"
	"github.com/ezfs/ezfs/zones"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// node is one inode of the mount. Hard links share a node (go-fuse keys nodes by
// inode number), so the state of open files, with the content lock, is per inode.
type node struct {
	gofs.Inode
	fsys *FS

	// zone is nil outside zones. It is set when the node is created, from its parent or
	// from the registry if it is a zone root, and only changes when MakeZone marks an
	// empty directory.
	zone     atomic.Pointer[zones.Zone]
	zoneRoot bool // set with zone; a zone root directory

	// open is the node's state while files of it are open, else nil (see state).
	// Changed under fsys.liveMu.
	open atomic.Pointer[state]
}

// lost reports whether the node's file has lost all its names.
func (n *node) lost() bool {
	_, parent := n.Parent()
	return parent == nil && !n.IsRoot()
}

// rel is the node's path relative to the backing dir, as the node tree has it: a way
// to the node, resolved beneath the backing root, and checked against the node's inode
// once resolved.
func (n *node) rel() string { return n.Path(n.fsys.top.EmbeddedInode()) }

// childRel is the path of entry name of directory n, for messages and the registry.
func (n *node) childRel(name string) string {
	if r := n.rel(); r != "" {
		return r + "/" + name
	}
	return name
}

// dir lends a descriptor of directory n, for *at calls on its entries.
func (n *node) dir() (dirRef, syscall.Errno) {
	if n.IsRoot() {
		return dirRef{fd: n.fsys.root.Fd()}, 0
	}
	if fd := n.fsys.dirs.get(n); fd >= 0 {
		if !n.fsys.sharedStorage || dirAlive(fd) {
			return dirRef{fd: fd, cache: &n.fsys.dirs}, 0
		}
		n.fsys.dirs.put(fd)
		n.fsys.dirs.drop(n)
	}
	if n.lost() {
		return dirRef{}, syscall.ENOENT
	}
	fd, err := n.fsys.root.OpenDir(n.rel())
	if err != nil {
		return dirRef{}, gofs.ToErrno(err)
	}
	var st unix.Stat_t
	if errno := n.check(fd, &st); errno != 0 {
		unix.Close(fd)
		return dirRef{}, errno
	}
	if n.fsys.dirs.add(n, fd) {
		return dirRef{fd: fd, cache: &n.fsys.dirs}, 0
	}
	return dirRef{fd: fd, own: true}, 0
}

// self opens the node's own backing object as an O_PATH descriptor (the caller closes
// it) and reads its attributes into st: by its name in its parent's descriptor (the
// directory cache's, so the path is resolved once for a run of calls in a directory),
// by its path for the root, or through one of its open files if it has no name left.
func (n *node) self(st *unix.Stat_t) (int, syscall.Errno) {
	var fd int
	var err error
	if n.lost() {
		err = n.viaOpenFile(func(ofd int) (err error) { fd, err = backing.Reopen(ofd, unix.O_PATH); return err })
	} else if d, name, ok, errno := n.entry(); ok {
		if errno != 0 {
			return -1, errno
		}
		fd, err = backing.OpenIn(d.fd, name, unix.O_PATH, 0)
		d.release()
	} else {
		fd, err = n.fsys.root.Open(n.rel(), unix.O_PATH, 0)
	}
	if err != nil {
		return -1, gofs.ToErrno(err)
	}
	if errno := n.check(fd, st); errno != 0 {
		unix.Close(fd)
		return -1, errno
	}
	return fd, 0
}

// withSelf calls fn with an O_PATH descriptor of the node's backing object.
func (n *node) withSelf(fn func(fd int) error) syscall.Errno {
	var st unix.Stat_t
	fd, errno := n.self(&st)
	if errno != 0 {
		return errno
	}
	defer unix.Close(fd)
	return gofs.ToErrno(fn(fd))
}

// check reads the attributes of the object open as fd into st and fails with ENOENT
// if it is not the node's inode: its name was swapped on the backing disk, and acting
// on another object than the one the kernel checked permissions on is never right.
func (n *node) check(fd int, st *unix.Stat_t) syscall.Errno {
	if err := backing.Stat(fd, st); err != nil {
		return gofs.ToErrno(err)
	}
	if !n.IsRoot() && n.fsys.stableAttr(st).Ino != n.StableAttr().Ino {
		return syscall.ENOENT
	}
	return 0
}

// sameZone compares zones by ID: two nodes may hold different copies of one zone.
func sameZone(a, b *zones.Zone) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.ID == b.ID
}

// encrypted reports whether the node is a regular file inside a zone.
func (n *node) encrypted() bool {
	return n.zone.Load() != nil && n.StableAttr().Mode&syscall.S_IFMT == syscall.S_IFREG
}

// newChild makes (or finds) the node for entry name of n, whose attributes are st;
// fd, when not -1, is open on the object (a directory: its zone marker is read
// through it). Its zone is the parent's; outside zones a registered zone root starts
// a new zone.
func (n *node) newChild(ctx context.Context, name string, fd int, st *unix.Stat_t, out *fuse.Attr) *gofs.Inode {
	ch := &node{fsys: n.fsys}
	if z := n.zone.Load(); z != nil {
		ch.zone.Store(z)
	} else if st.Mode&syscall.S_IFMT == syscall.S_IFDIR && fd >= 0 {
		if z := n.fsys.dirZone(fd, st, n.childRel(name)); z != nil {
			ch.zone.Store(z)
			ch.zoneRoot = true
		}
	}
	id := n.fsys.stableAttr(st)
	id.Gen = n.fsys.nodeGen(ch.zone.Load())
	if known := n.childNode(name); known != nil && known.StableAttr().Ino == id.Ino && known.StableAttr().Gen == id.Gen {
		known.healZone(ch.zone.Load()) // go-fuse keeps the known node, not ch
	}
	in := n.NewInode(ctx, ch, id)
	out.FromStat(sysStat(st))
	in.Operations().(*node).fixSize(out, st.Size)
	return in
}

// OnForget drops the node from the directory cache once the kernel forgot it.
func (n *node) OnForget() {
	if n.StableAttr().Mode&syscall.S_IFMT == syscall.S_IFDIR {
		n.fsys.dirs.drop(n)
	}
}

func (n *node) childNode(name string) *node {
	if in := n.GetChild(name); in != nil {
		c, _ := in.Operations().(*node)
		return c
	}
	return nil
}

// entry lends a descriptor of the node's parent directory and the node's name in it,
// for calls on the node by (directory, name) that resolve its path only once, through
// the directory cache. ok is false for the root and for a node without a name.
func (n *node) entry() (d dirRef, name string, ok bool, errno syscall.Errno) {
	if n.IsRoot() {
		return dirRef{}, "", false, 0
	}
	name, parent := n.Parent()
	if parent == nil {
		return dirRef{}, "", false, 0
	}
	p, isNode := parent.Operations().(*node)
	if !isNode {
		return dirRef{}, "", false, 0
	}
	d, errno = p.dir()
	return d, name, true, errno
}

// statEntry reads the node's attributes by (directory, name), checked to be its inode
// as check does; ok is false where entry has no way (then self does it).
func (n *node) statEntry(st *unix.Stat_t) (ok bool, errno syscall.Errno) {
	return n.viaEntry(st, nil)
}

// atEntry calls fn with the node's (directory, name) once the name is found to be the
// node; ok is false where fn could not be called that way (no entry, or ENOSYS).
func (n *node) atEntry(fn func(dirfd int, name string) error) (ok bool, errno syscall.Errno) {
	var st unix.Stat_t
	return n.viaEntry(&st, fn)
}

// readEntry calls fn, a read of the node's (directory, name), and checks that the name
// is the node's only where fn has something of the object to return (nil, or an
// errHasData): an answer like ENODATA tells nothing of whatever is at the name, and
// most of the getxattr calls ls -l makes (two per file) answer that, so they cost one
// call on the disk instead of two. ok as atEntry's.
func (n *node) readEntry(fn func(dirfd int, name string) error) (ok bool, errno syscall.Errno) {
	d, name, ok, errno := n.entry()
	if !ok || errno != 0 {
		return ok, errno
	}
	defer d.release()
	err := fn(d.fd, name)
	data, isData := err.(errHasData)
	switch {
	case err == syscall.ENOSYS:
		return false, 0
	case err != nil && !isData:
		return true, gofs.ToErrno(err)
	}
	var st unix.Stat_t
	if errno := n.isEntry(d.fd, name, &st); errno != 0 {
		return true, errno
	}
	return true, gofs.ToErrno(data.error)
}

// isEntry reads the attributes of entry name of dirfd into st and fails with ENOENT
// if it is not the node's inode, as check does for a descriptor.
func (n *node) isEntry(dirfd int, name string, st *unix.Stat_t) syscall.Errno {
	if err := backing.Lstat(dirfd, name, st); err != nil {
		return gofs.ToErrno(err)
	}
	if n.fsys.stableAttr(st).Ino != n.StableAttr().Ino {
		return syscall.ENOENT
	}
	return 0
}

// errHasData wraps an error of a read that still tells something of the object (ERANGE:
// its value is larger than the buffer), for readEntry.
type errHasData struct{ error }

func (n *node) viaEntry(st *unix.Stat_t, fn func(dirfd int, name string) error) (bool, syscall.Errno) {
	d, name, ok, errno := n.entry()
	if !ok || errno != 0 {
		return ok, errno
	}
	defer d.release()
	if errno := n.isEntry(d.fd, name, st); errno != 0 {
		return true, errno
	}
	if fn == nil {
		return true, 0
	}
	err := fn(d.fd, name)
	if err == syscall.ENOSYS {
		return false, 0
	}
	return true, gofs.ToErrno(err)
}
