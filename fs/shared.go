package fs

import (
	"encoding/binary"
	"errors"
	"syscall"
	"time"

	"github.com/ezfs/ezfs/backing"
	"github.com/ezfs/ezfs/crypto"
	"github.com/ezfs/ezfs/zones"
	"golang.org/x/sys/unix"
)

// A sharedstorage mount (-o sharedstorage) serves a backing directory that other
// daemons change too: other hosts mounting the same NFS, CephFS or SAN file system,
// or other daemons on this host. What each setting protects, and what it costs, is in
// docs/DESIGN.md (2026-12-01, sharedstorage):
//
//   - the kernel caches no entry, attribute or negative entry (attrTimeout);
//   - a node's generation is its zone's (nodeGen), so an inode number that another host
//     freed and reused for a file of another zone, or outside zones, never brings back
//     a node with the wrong zone;
//   - the state of an open zone file is checked against the backing file: another
//     file behind the same inode number fails the open (revalidateLocked), a size
//     changed elsewhere is learnt again before reads, writes, truncates and
//     fallocates (refreshSize, resyncLocked);
//   - a cached directory descriptor is used only while its directory still has a name
//     (dirAlive).
//
// The kernel keeps no page of a zone file across opens anyway (no FOPEN_KEEP_CACHE),
// drops cached pages when a GETATTR shows a new size or mtime (FUSE_AUTO_INVAL_DATA),
// and ezfs asks for no writeback cache.

// errReplaced: a zone file open here has another file behind its inode number now.
var errReplaced = errors.New("the backing file is another file than the one open here (replaced on the shared storage, its inode number reused); close the file's open copies")

// attrTimeout is how long the kernel may cache entries, attributes and negative
// entries of the mount.
func (f *FS) attrTimeout() time.Duration {
	if f.sharedStorage {
		return 0
	}
	return attrTimeout
}

// nodeGen is the generation of a node in zone z (nil: outside zones). go-fuse keys
// nodes by inode number and generation; on a sharedstorage mount the generation tells
// the zones apart, so that a file deleted by another host whose inode number comes back
// for an object of another zone gets a node of its own. Hard links and renames never
// cross a zone boundary, so every name of one inode has one generation.
func (f *FS) nodeGen(z *zones.Zone) uint64 {
	if !f.sharedStorage || z == nil {
		return 1
	}
	return binary.LittleEndian.Uint64(z.ID[:8]) | 2 // never 1, the generation outside zones
}

// knownBackingLocked is the backing size that the state's size was learnt from, or
// that its own writes made.
func (s *state) knownBackingLocked() int64 {
	if s.torn {
		return s.tornBacking
	}
	return crypto.BackingSize(s.size)
}

// staleLocked reports whether another daemon changed the size of the file since the
// state learnt it, by its backing size now.
func (s *state) staleLocked(backing int64) bool {
	return s.fsys.sharedStorage && s.sizeKnown && backing != s.knownBackingLocked()
}

// revalidateLocked checks, on a sharedstorage mount, that the zone file open as fd is
// the file the state's cipher is for: an inode number that another host freed may
// hold another file now, which is never served with the old key (errReplaced). An
// open that finds the state of other opens asks, and so does every relearning of the
// size, which happens before reads (refreshSize: the kernel asks for the attributes
// first), writes, truncates and fallocates (resyncLocked).
func (s *state) revalidateLocked(fd int) error {
	if !s.fsys.sharedStorage || s.cc == nil {
		return nil
	}
	e, err := zones.ReadParsedEDEK(fd)
	if err != nil {
		return err
	}
	if e.FileID != s.cc.FileID() {
		return errReplaced
	}
	return nil
}

// refreshSize learns the size of the zone file open as fd again where another daemon
// changed it (backing is its backing size now); the kernel asks for the attributes
// through the open file before it reads past what it knows, so reads through a file
// that was open before the change see it too.
func (s *state) refreshSize(fd int, backing int64) syscall.Errno {
	s.mu.RLock()
	stale := s.staleLocked(backing)
	s.mu.RUnlock()
	if !stale {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.errno(fd, s.resyncLocked(fd))
}

// resyncLocked learns the size of the zone file open as fd again, on a sharedstorage
// mount, if another daemon changed it. Every write, truncate and fallocate asks
// first: one built on a stale size would seal a shorter last block over another
// host's appended bytes, or fill them with zeros as a hole. (Two hosts writing one
// file at once still need locks between them: docs/DESIGN.md.)
func (s *state) resyncLocked(fd int) error {
	if !s.fsys.sharedStorage || !s.sizeKnown {
		return nil
	}
	var st unix.Stat_t
	if err := backing.Stat(fd, &st); err != nil {
		return err
	}
	if !s.staleLocked(st.Size) {
		return nil
	}
	s.sizeKnown = false
	if err := s.revalidateLocked(fd); err != nil {
		return err
	}
	return s.learnLocked(fd)
}

// dirAlive reports whether the directory open as fd still has a name: on a shared
// backing directory another host may have removed it, and a directory made in its
// place (maybe under the same inode number) is reached by its path again.
func dirAlive(fd int) bool {
	var st unix.Stat_t
	return backing.Stat(fd, &st) == nil && st.Nlink > 0
}
