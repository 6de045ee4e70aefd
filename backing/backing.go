// Package backing is the one way ezfs reaches the files of a backing directory. The
// daemon runs as root, and the names below the backing root are controlled by users:
// any of them may be swapped for a symlink at any moment. So no path string that the
// kernel resolves from "/" ever names a backing file. Every call starts from a
// descriptor of the backing root, opened once, and resolves names beneath it with
// openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS); the object is then
// acted on by descriptor (f* calls, *at calls with AT_SYMLINK_NOFOLLOW), or, for calls
// that have neither (chmod, truncate and the xattr calls of an O_PATH descriptor),
// through /proc/self/fd/N, which names the object the descriptor holds and nothing else.
//
// Paths are relative to the root, with no "." or ".." components, of any length: a
// path longer than the kernel's PATH_MAX is resolved in pieces.
package backing

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Root is an open backing directory.
type Root struct {
	fd       int // O_PATH descriptor of the root directory; closed by Close
	Dev, Ino uint64
	// Path is the root as it was named at mount time: for messages only.
	Path string
}

// OpenRoot opens the backing directory at path, the one path resolved from "/": the
// administrator named it, and it is resolved once.
func OpenRoot(path string) (*Root, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("backing dir %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("backing dir %s: %w", path, err)
	}
	return &Root{fd: fd, Dev: st.Dev, Ino: st.Ino, Path: path}, nil
}

// Close closes the root descriptor.
func (r *Root) Close() error { return unix.Close(r.fd) }

// Is reports whether st describes the root directory itself.
func (r *Root) Is(st *unix.Stat_t) bool { return st.Dev == r.Dev && st.Ino == r.Ino }

// resolveFlags refuse every way out of the root: "..", absolute symlinks, relative
// ones, and /proc magic links.
const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// maxPiece bounds the part of a path resolved by one openat2 call; the kernel refuses
// paths of PATH_MAX (4096) bytes or more.
const maxPiece = 3072

// Open opens rel ("" for the root itself) with flags, which always gain O_NOFOLLOW and
// O_CLOEXEC: a final symlink is opened as itself with O_PATH and refused with ELOOP
// otherwise, as is any symlink on the way.
func (r *Root) Open(rel string, flags int, mode uint32) (int, error) {
	return OpenAt(r.fd, rel, flags, mode)
}

// OpenAt opens rel beneath the directory dirfd, as Root.Open does beneath the root.
func OpenAt(dirfd int, rel string, flags int, mode uint32) (int, error) {
	rel = strings.Trim(rel, "/")
	if rel == "" {
		rel = "."
	}
	dir, owned := dirfd, false
	for len(rel) > maxPiece {
		cut := strings.LastIndexByte(rel[:maxPiece], '/')
		if cut <= 0 {
			break // a single name this long: the kernel answers ENAMETOOLONG
		}
		next, err := openat2(dir, rel[:cut], unix.O_PATH|unix.O_DIRECTORY, 0)
		if owned {
			unix.Close(dir)
		}
		if err != nil {
			return -1, err
		}
		dir, owned, rel = next, true, rel[cut+1:]
	}
	fd, err := openat2(dir, rel, flags, mode)
	if owned {
		unix.Close(dir)
	}
	return fd, err
}

// OpenDir opens directory rel as an O_PATH descriptor: the dirfd of *at calls.
func (r *Root) OpenDir(rel string) (int, error) {
	return r.Open(rel, unix.O_PATH|unix.O_DIRECTORY, 0)
}

func openat2(dirfd int, rel string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Openat2(dirfd, rel, &unix.OpenHow{
			Flags:   uint64(flags | unix.O_NOFOLLOW | unix.O_CLOEXEC),
			Mode:    uint64(mode & 0o7777),
			Resolve: resolveFlags,
		})
		if err == unix.EINTR || err == unix.EAGAIN {
			// EAGAIN: a rename elsewhere raced the lookup (RESOLVE_BENEATH); try again.
			continue
		}
		if err == unix.ENOSYS {
			return openWalk(dirfd, rel, flags, mode)
		}
		return fd, err
	}
}

// openWalk is openat2 for kernels before 5.6: one component at a time, each opened
// with O_NOFOLLOW, so no symlink is followed and ".." never appears.
func openWalk(dirfd int, rel string, flags int, mode uint32) (int, error) {
	parts := strings.Split(rel, "/")
	dir, owned := dirfd, false
	defer func() {
		if owned {
			unix.Close(dir)
		}
	}()
	for i, p := range parts {
		if p == ".." {
			return -1, unix.EXDEV
		}
		if i == len(parts)-1 {
			return unix.Openat(dir, p, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
		}
		next, err := unix.Openat(dir, p, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, err
		}
		if owned {
			unix.Close(dir)
		}
		dir, owned = next, true
	}
	return -1, unix.ENOENT
}

// Split cuts rel into its parent directory and last name; the root has no name.
func Split(rel string) (dir, name string) {
	rel = strings.Trim(rel, "/")
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return "", rel
	}
	return rel[:i], rel[i+1:]
}

// ProcFD names the object open as fd: resolved by the kernel, it is that object
// itself, even one without a name (unlinked, O_TMPFILE) and even when fd is O_PATH.
func ProcFD(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// Parent opens the parent directory of the directory open as fd, as an O_PATH
// descriptor. ".." is never a symlink; at the top of the file system it is the
// directory itself.
func Parent(fd int) (int, error) {
	return unix.Openat(fd, "..", unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

// ErrNotBeneath reports a directory that is not below the backing root.
var ErrNotBeneath = errors.New("is not inside the backing directory")

// Fd is the root's descriptor, for *at calls on its entries; it stays open until Close.
func (r *Root) Fd() int { return r.fd }

// ReadDir lists directory rel, sorted by name.
func (r *Root) ReadDir(rel string) ([]os.DirEntry, error) {
	fd, err := r.Open(rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: rel, Err: err}
	}
	d := os.NewFile(uintptr(fd), rel)
	defer d.Close()
	entries, err := d.ReadDir(-1)
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	return entries, err
}
