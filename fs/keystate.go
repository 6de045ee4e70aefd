package fs

import (
	"errors"
	"syscall"

	"github.com/ezfs/ezfs/zones"
)

// DropKeyCaches has the kernel drop the cached pages of every file it knows in the
// zones of key name, so that reads it would answer from its page cache come to the
// daemon, which refuses them while the key is not active (usable). It returns how
// many files it asked for.
func (f *FS) DropKeyCaches(name string) int {
	f.liveMu.Lock()
	var ns []*node
	for _, s := range f.live { // the open files: a file not open is refused its open
		if z := s.zone.Load(); z != nil && z.Key == name {
			ns = append(ns, s.node)
		}
	}
	f.liveMu.Unlock()
	for _, n := range ns {
		// No lock is held: the kernel may wait for a read of the file in flight.
		if errno := n.NotifyContent(0, 0); errno != 0 && errno != syscall.ENOENT {
			f.log.Printf("drop the cached pages of %s: %v", n.path(), errno)
		}
	}
	return len(ns)
}

// VersionInUse counts the open files of the mount whose EDEK is under zone key
// name@version (version 0: any version of name), read through their open descriptors
// now: they include files the scan of the backing directory cannot see (unlinked while
// open, O_TMPFILE files not linked yet). A file whose EDEK cannot be read counts. The
// live map (the open files) is held only to list them.
func (f *FS) VersionInUse(name string, version uint32) int {
	f.liveMu.Lock()
	var ns []*node
	for _, s := range f.live {
		// The EDEK decides below, not the version the file loaded: a reencrypt may
		// have moved the file since.
		if z := s.zone.Load(); z != nil && z.Key == name {
			ns = append(ns, s.node)
		}
	}
	f.liveMu.Unlock()
	count := 0
	for _, n := range ns {
		err := n.viaOpenFile(func(fd int) error {
			e, err := zones.ReadParsedEDEK(fd)
			if err != nil {
				return err
			}
			if e.KeyNameIn(name) == name && (version == 0 || e.KeyVersion == version) {
				return errInUse
			}
			return nil
		})
		if err != nil && err != syscall.ENOENT { // ENOENT: not open; its EDEK is on disk
			count++
		}
	}
	return count
}

// errInUse says an open file is on the version VersionInUse asks about.
var errInUse = errors.New("in use")
