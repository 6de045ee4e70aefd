package backing

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The calls below act on the object open as fd, whatever kind of descriptor it is:
// O_PATH descriptors (which the f* calls refuse with EBADF) go through ProcFD, which
// names the object itself (for a symlink: the link, never its target).

// Stat reads the attributes of the object open as fd.
func Stat(fd int, st *unix.Stat_t) error { return unix.Fstat(fd, st) }

// Chmod sets the mode of the object open as fd. A symlink has no mode of its own:
// EOPNOTSUPP, as fchmodat(AT_SYMLINK_NOFOLLOW) answers.
func Chmod(fd int, mode uint32) error {
	if err := unix.Fchmod(fd, mode); err != unix.EBADF {
		return err
	}
	return unix.Chmod(ProcFD(fd), mode)
}

// Chown sets the owner of the object open as fd; -1 keeps a field.
func Chown(fd, uid, gid int) error {
	return unix.Fchownat(fd, "", uid, gid, unix.AT_EMPTY_PATH)
}

// Truncate sets the size of the regular file open as fd (EISDIR, EINVAL otherwise).
func Truncate(fd int, size int64) error {
	if err := unix.Ftruncate(fd, size); err != unix.EBADF && err != unix.EINVAL {
		return err
	}
	// EINVAL also answers a descriptor not open for writing: try by name.
	return unix.Truncate(ProcFD(fd), size)
}

// Utimens sets the access and modification times of the object open as fd
// (UTIME_OMIT keeps one).
func Utimens(fd int, ts []unix.Timespec) error {
	// utimensat(fd, "", AT_EMPTY_PATH) takes any descriptor, O_PATH ones too, in one
	// call without a lookup in /proc; kernels that refuse the flag answer EINVAL.
	if err := unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH); err != unix.EINVAL {
		return err
	}
	if err := futimens(fd, ts); err != unix.EBADF {
		return err
	}
	return unix.UtimesNanoAt(unix.AT_FDCWD, ProcFD(fd), ts, 0)
}

// futimens is utimensat with no path, which x/sys/unix does not offer.
func futimens(fd int, ts []unix.Timespec) error {
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// Access checks mask against the object open as fd for the daemon's own identity.
func Access(fd int, mask uint32) error {
	return unix.Faccessat(unix.AT_FDCWD, ProcFD(fd), mask, 0)
}

// Getxattr reads attribute attr of the object open as fd.
func Getxattr(fd int, attr string, dest []byte) (int, error) {
	sz, err := unix.Fgetxattr(fd, attr, dest)
	if err == unix.EBADF {
		sz, err = unix.Getxattr(ProcFD(fd), attr, dest)
	}
	return sz, err
}

// Setxattr sets attribute attr of the object open as fd.
func Setxattr(fd int, attr string, data []byte, flags int) error {
	err := unix.Fsetxattr(fd, attr, data, flags)
	if err == unix.EBADF {
		err = unix.Setxattr(ProcFD(fd), attr, data, flags)
	}
	return err
}

// Removexattr removes attribute attr of the object open as fd.
func Removexattr(fd int, attr string) error {
	err := unix.Fremovexattr(fd, attr)
	if err == unix.EBADF {
		err = unix.Removexattr(ProcFD(fd), attr)
	}
	return err
}

// Listxattr lists the attribute names of the object open as fd.
func Listxattr(fd int, dest []byte) (int, error) {
	sz, err := unix.Flistxattr(fd, dest)
	if err == unix.EBADF {
		sz, err = unix.Listxattr(ProcFD(fd), dest)
	}
	return sz, err
}

// Reopen opens the object held by fd anew with flags, as open(/proc/self/fd/N) does
// for the caller: the way to a file that has no name left.
func Reopen(fd int, flags int) (int, error) {
	return unix.Open(ProcFD(fd), (flags&^unix.O_NOFOLLOW)|unix.O_CLOEXEC, 0)
}
