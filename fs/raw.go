package fs

import (
	"log"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// rawFS is the raw file system the FUSE server talks to: go-fuse's node bridge with
// the duties the kernel hands over with three capabilities, done at the protocol level
// where the request's flags, umask and file handles are visible.
//
// FUSE_HANDLE_KILLPRIV_V2 (private mounts). Without that capability the kernel
// asks the daemon for security.capability before every write (GETXATTR), a second
// round trip per write. With it, the kernel marks the writes, truncates and O_TRUNC
// opens of callers without CAP_FSETID, and the daemon drops set-user-ID, and
// set-group-ID where group execute is set, as the backing disk would for such a
// caller. security.capability needs no help: the backing disk drops it on every
// write, truncate and chown, whoever the daemon writes as. The marked requests carry
// a file handle or get one in the reply, and the mode is read and changed through it,
// so a file unlinked while open is handled too.
//
// FUSE_DONT_MASK (shared mounts): the caller's umask, which the kernel then sends
// instead of applying, is applied to new files, directories and nodes only where the
// parent directory has no default ACL, as the backing disk does (a default ACL replaces
// the umask). The daemon's own umask is 0, so the disk cannot do it for the caller.
//
// FUSE_SETXATTR_EXT (shared mounts): see SetXAttr. FUSE_POSIX_ACL (shared mounts):
// see GetXAttr.
type rawFS struct {
	fuse.RawFileSystem
	log *log.Logger
	srv *fuse.Server // set by Init, before any request
	// acls: a shared mount, with FUSE_POSIX_ACL, FUSE_DONT_MASK and FUSE_SETXATTR_EXT
	// negotiated; set before the server starts.
	acls bool
	// callers: a shared mount, where passthrough backings are registered as the
	// caller (asOpener); set before the server starts.
	callers bool
}

func newRawFS(inner fuse.RawFileSystem, l *log.Logger) *rawFS {
	return &rawFS{RawFileSystem: inner, log: l}
}

func (k *rawFS) Init(srv *fuse.Server) {
	k.srv = srv
	k.RawFileSystem.Init(srv)
}

// dropSuidgid clears S_ISUID, and S_ISGID when group execute is set, on the regular
// file of node id through handle fh.
func (k *rawFS) dropSuidgid(cancel <-chan struct{}, h fuse.InHeader, id, fh uint64) fuse.Status {
	return k.dropBits(cancel, h, id, fh, func(mode uint32) uint32 {
		if mode&syscall.S_IFMT != syscall.S_IFREG {
			return 0
		}
		return killBits(mode)
	})
}

// dropBits clears the mode bits that bits picks from the mode of node id, through
// handle fh where there is one (0: none), and has the kernel reload the attributes.
func (k *rawFS) dropBits(cancel <-chan struct{}, h fuse.InHeader, id, fh uint64, bits func(mode uint32) uint32) fuse.Status {
	h.NodeId = id
	var a fuse.AttrOut
	if st := k.RawFileSystem.GetAttr(cancel, &fuse.GetAttrIn{InHeader: h, Flags_: fuse.FUSE_GETATTR_FH, Fh_: fh}, &a); !st.Ok() {
		return st
	}
	drop := bits(a.Mode)
	if drop == 0 {
		return fuse.OK
	}
	in := &fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{
		InHeader: h, Valid: fuse.FATTR_MODE | fuse.FATTR_FH, Fh: fh, Mode: a.Mode & 0o7777 &^ drop,
	}}
	if st := k.RawFileSystem.SetAttr(cancel, in, &a); !st.Ok() {
		return st
	}
	// A write's reply carries no attributes: without this the kernel would show the
	// old mode until its attribute cache expires.
	if st := k.srv.InodeNotify(id, -1, 0); !st.Ok() && st != fuse.ENOENT {
		k.log.Printf("invalidate attributes of node %d: %v", id, st)
	}
	return fuse.OK
}

// killBits are the bits of mode that a write by a caller without CAP_FSETID drops:
// set-user-ID, and set-group-ID where group execute is set (without it, set-group-ID
// marks mandatory locking, which writes keep).
func killBits(mode uint32) uint32 {
	drop := mode & syscall.S_ISUID
	if mode&(syscall.S_ISGID|syscall.S_IXGRP) == syscall.S_ISGID|syscall.S_IXGRP {
		drop |= syscall.S_ISGID
	}
	return drop
}

// Writev drops the bits before writing, as the kernel's file_remove_privs does.
func (k *rawFS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	if in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0 {
		if st := k.dropSuidgid(cancel, in.InHeader, in.NodeId, in.Fh); !st.Ok() {
			return 0, st
		}
	}
	return k.RawFileSystem.Writev(cancel, in, data)
}

func (k *rawFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	if in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0 {
		if st := k.dropSuidgid(cancel, in.InHeader, in.NodeId, in.Fh); !st.Ok() {
			return 0, st
		}
	}
	return k.RawFileSystem.Write(cancel, in, data)
}

// SetAttr drops the bits before a marked truncate or chown, so the attributes in the
// reply already show it.
func (k *rawFS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	if in.Valid&fuse.FATTR_KILL_SUIDGID != 0 {
		fh, _ := in.GetFh()
		if st := k.dropSuidgid(cancel, in.InHeader, in.NodeId, fh); !st.Ok() {
			return st
		}
	}
	return k.RawFileSystem.SetAttr(cancel, in, out)
}

// Open and Create drop the bits after an O_TRUNC open has truncated the file. Both
// replies carry no attributes, and the kernel reloads them after a truncating open.
func (k *rawFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	st := k.asOpener(&in.InHeader, func() fuse.Status { return k.RawFileSystem.Open(cancel, in, out) })
	if !st.Ok() {
		return st
	}
	if in.Mode&fuse.OPEN_KILL_SUIDGID != 0 {
		if st = k.dropSuidgid(cancel, in.InHeader, in.NodeId, out.Fh); !st.Ok() {
			k.RawFileSystem.Release(cancel, &fuse.ReleaseIn{InHeader: in.InHeader, Fh: out.Fh, Flags: in.Flags})
			return st
		}
	}
	return fuse.OK
}

// SetXAttr clears set-group-ID after an access ACL set by a caller outside the file's
// group (the kernel marks it; FUSE_SETXATTR_EXT), as the disk does for such a caller.
// The daemon sets the ACL as root, whom the disk lets keep the bit.
func (k *rawFS) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	st := k.RawFileSystem.SetXAttr(cancel, in, attr, data)
	if !st.Ok() || in.SetXAttrFlags&fuse.SETXATTR_ACL_KILL_SGID == 0 {
		return st
	}
	return k.dropBits(cancel, in.InHeader, in.NodeId, 0, func(mode uint32) uint32 { return mode & syscall.S_ISGID })
}

// GetXAttr answers "no ACL" where the backing file system has no ACLs (EOPNOTSUPP:
// ramfs, NFSv4, vfat). With FUSE_POSIX_ACL the kernel reads a file's ACL for its
// permission checks and fails them with any error other than "no data", so every
// access by a non-owner would fail with "Operation not supported".
func (k *rawFS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	sz, st := k.RawFileSystem.GetXAttr(cancel, h, attr, dest)
	if k.acls && st == fuse.Status(syscall.EOPNOTSUPP) && (attr == aclAccess || attr == aclDefault) {
		return 0, fuse.Status(syscall.ENODATA)
	}
	return sz, st
}

// The xattrs that hold POSIX ACLs.
const (
	aclAccess  = "system.posix_acl_access"
	aclDefault = "system.posix_acl_default"
)

// masked is mode as the backing disk would create it for a caller with umask: masked,
// unless the parent directory h.NodeId has a default ACL.
func (k *rawFS) masked(cancel <-chan struct{}, h *fuse.InHeader, mode, umask uint32) uint32 {
	if !k.acls || mode&umask == 0 {
		return mode
	}
	if _, st := k.RawFileSystem.GetXAttr(cancel, h, aclDefault, nil); st.Ok() {
		return mode
	}
	return mode &^ umask
}

func (k *rawFS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	in.Mode = k.masked(cancel, &in.InHeader, in.Mode, in.Umask)
	return k.RawFileSystem.Mkdir(cancel, in, name, out)
}

func (k *rawFS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	in.Mode = k.masked(cancel, &in.InHeader, in.Mode, in.Umask)
	return k.RawFileSystem.Mknod(cancel, in, name, out)
}

func (k *rawFS) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	in.Mode = k.masked(cancel, &in.InHeader, in.Mode, in.Umask)
	return k.asOpener(&in.InHeader, func() fuse.Status { return k.RawFileSystem.Tmpfile(cancel, in, out) })
}

func (k *rawFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	in.Mode = k.masked(cancel, &in.InHeader, in.Mode, in.Umask)
	st := k.asOpener(&in.InHeader, func() fuse.Status { return k.RawFileSystem.Create(cancel, in, name, out) })
	if !st.Ok() {
		return st
	}
	if in.OpenFlags&fuse.OPEN_KILL_SUIDGID != 0 {
		// The create may have opened an existing file; a new one has nothing to drop
		// unless it was created with the bits, and then dropping them errs on the safe
		// side.
		if kst := k.dropSuidgid(cancel, in.InHeader, out.NodeId, out.Fh); !kst.Ok() {
			// The entry and the open handle are the kernel's now: the create stands.
			k.log.Printf("create %s: set-user-ID and set-group-ID kept after O_TRUNC: %v", name, kst)
		}
	}
	return st
}
