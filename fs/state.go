package fs

import (
	"sync"
	"syscall"

	"github.com/ezfs/ezfs/crypto"
)

// state is what a node holds while files of it are open: the backing descriptors and,
// in a zone, the content lock, the file's cipher and its size. A node the kernel
// merely knows (a lookup, a stat, an `ls -l`) holds none of it, so the daemon's memory
// per cached inode is go-fuse's and a few words of the node's; the data key's cipher
// lives only while the file is open, and is zeroed when the last open goes.
//
// A node's state is made by its first open (acquire) and dropped by its last release;
// a zone file whose backing file ends in a torn tail keeps its state (without the
// cipher) until a change cuts the tail, because the backing size alone would report
// the torn bytes as contents.
type state struct {
	*node

	// refs counts the open files of the node, and the holders of its content lock
	// (LockFile), that keep the state. Guarded by fsys.liveMu.
	refs int

	// fds are the backing descriptors of the node's open files. A file that has lost
	// its names (unlinked while open, or O_TMPFILE) is reached through one of them.
	// Guarded by fdMu, which an operation through one holds, so that the file's
	// release cannot close it meanwhile. fdMu may be taken while mu is held (an open
	// records its descriptor), never the other way round.
	fdMu sync.Mutex
	fds  []int

	// mu is the content lock of a regular file in a zone: every path that changes
	// contents or size holds it for writing; reads hold it for reading. It guards the
	// fields below. cc is the file's block cipher, built from the EDEK by the first
	// open (loadLocked); size is the plaintext size, maintained by every write and
	// truncate once known.
	mu sync.RWMutex
	cc *crypto.ContentCipher
	// keyVersion is the zone key version of the file's EDEK, for messages; set with cc.
	keyVersion uint32
	// holeFrom is a backing offset below which the file has no holes: 0 at load (not
	// known yet), raised by the SEEK_HOLE of the first write that needs it, lowered by
	// an extension or a punch that makes holes, raised as reserve finds the holes
	// filled; math.MaxInt64 for none.
	holeFrom  int64
	size      int64
	sizeKnown bool
	// sizeOf is the file ID of the file whose size size is.
	sizeOf crypto.FileID
	torn   bool // the backing file ends in bytes past size, left by a crash
	// tornBacking is the backing size of a torn file when its size was learnt.
	tornBacking int64
}

// acquire returns the node's state, made if it has none, and holds it until release.
// A zone file's state is entered in the live map, under the stripe lock of its inode
// (see LockFile), so that a rewrap of the file's EDEK never runs while it loads.
func (n *node) acquire() *state {
	f := n.fsys
	ino := n.StableAttr().Ino
	enc := n.encrypted()
	if enc {
		m := f.stripe(ino)
		m.Lock()
		defer m.Unlock()
	}
	f.liveMu.Lock()
	defer f.liveMu.Unlock()
	s := n.open.Load()
	if s == nil {
		s = &state{node: n}
		n.open.Store(s)
		if enc {
			f.live[ino] = s
		}
	}
	s.refs++
	return s
}

// release gives back a hold on s that acquire gave. The last one drops the cipher,
// zeroed, and the state, unless it must keep a torn tail's size.
func (s *state) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, f := s.node, s.fsys
	f.liveMu.Lock()
	defer f.liveMu.Unlock()
	if s.refs--; s.refs > 0 {
		return
	}
	s.cc.Close()
	s.cc = nil
	if s.torn {
		return
	}
	if n.open.Load() == s {
		n.open.Store(nil)
	}
	if ino := n.StableAttr().Ino; f.live[ino] == s {
		delete(f.live, ino)
	}
}

// opened records fd, a new open file of the node.
func (s *state) opened(fd int) {
	s.fdMu.Lock()
	s.fds = append(s.fds, fd)
	s.fdMu.Unlock()
}

// closing forgets fd, an open file of the node about to be closed.
func (s *state) closing(fd int) {
	s.fdMu.Lock()
	defer s.fdMu.Unlock()
	for i, f := range s.fds {
		if f == fd {
			s.fds = append(s.fds[:i], s.fds[i+1:]...)
			return
		}
	}
}

// viaOpenFile calls fn with the backing descriptor of one of the node's open files;
// ENOENT if none is open.
func (n *node) viaOpenFile(fn func(fd int) error) error {
	s := n.open.Load()
	if s == nil {
		return syscall.ENOENT
	}
	s.fdMu.Lock()
	defer s.fdMu.Unlock()
	if len(s.fds) == 0 {
		return syscall.ENOENT
	}
	return fn(s.fds[0])
}
