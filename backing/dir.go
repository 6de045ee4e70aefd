package backing

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The calls below act on entry name of the directory open as dirfd. A name is one
// component (FUSE never sends a "/"), and none of them follows a symlink at name.

// Lstat reads the attributes of name itself.
func Lstat(dirfd int, name string, st *unix.Stat_t) error {
	return unix.Fstatat(dirfd, name, st, unix.AT_SYMLINK_NOFOLLOW)
}

// OpenIn opens name with flags (O_NOFOLLOW added): a symlink is ELOOP, or the link
// itself with O_PATH.
func OpenIn(dirfd int, name string, flags int, mode uint32) (int, error) {
	return openat2(dirfd, name, flags, mode)
}

// Mkdir makes directory name.
func Mkdir(dirfd int, name string, mode uint32) error { return unix.Mkdirat(dirfd, name, mode) }

// Mknod makes a node (FIFO, socket, device, empty file) called name.
func Mknod(dirfd int, name string, mode uint32, dev int) error {
	return unix.Mknodat(dirfd, name, mode, dev)
}

// Symlink makes name a symlink to target; target is stored, never resolved here.
func Symlink(target string, dirfd int, name string) error {
	return unix.Symlinkat(target, dirfd, name)
}

// Link gives the object open as fd (an O_PATH or open file; one that has lost its
// names only if it was made with O_TMPFILE and without O_EXCL) the new name.
func Link(fd int, dirfd int, name string) error {
	return unix.Linkat(fd, "", dirfd, name, unix.AT_EMPTY_PATH)
}

// LinkName makes newName a hard link to oldName itself (a symlink stays one).
func LinkName(olddir int, oldName string, newdir int, newName string) error {
	return unix.Linkat(olddir, oldName, newdir, newName, 0)
}

// Rename moves oldName to newName with renameat2 flags (RENAME_NOREPLACE, ...).
func Rename(olddir int, oldName string, newdir int, newName string, flags uint) error {
	return unix.Renameat2(olddir, oldName, newdir, newName, flags)
}

// Unlink removes the non-directory name.
func Unlink(dirfd int, name string) error { return unix.Unlinkat(dirfd, name, 0) }

// Rmdir removes the empty directory name.
func Rmdir(dirfd int, name string) error { return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR) }

// Readlink returns the target of symlink name.
func Readlink(dirfd int, name string) ([]byte, error) {
	for l := 256; ; l *= 2 {
		buf := make([]byte, l)
		sz, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return nil, err
		}
		if sz < len(buf) {
			return buf[:sz], nil
		}
	}
}

// Statfs reads the statistics of the file system holding the object open as fd.
func Statfs(fd int, st *unix.Statfs_t) error { return unix.Fstatfs(fd, st) }

// xattrArgs is the kernel's struct xattr_args of getxattrat(2). value is a real
// pointer, not an integer, so that the buffer is kept alive and followed if it moves.
type xattrArgs struct {
	value *byte
	size  uint32
	flags uint32
}

// Getxattrat reads attribute attr of entry name itself (getxattrat(2), Linux 6.13);
// ENOSYS on older kernels, where the caller goes through the entry's descriptor.
func Getxattrat(dirfd int, name, attr string, dest []byte) (int, error) {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return 0, err
	}
	a, err := unix.BytePtrFromString(attr)
	if err != nil {
		return 0, err
	}
	args := xattrArgs{size: uint32(len(dest))}
	if len(dest) > 0 {
		args.value = &dest[0]
	}
	r, _, e := unix.Syscall6(unix.SYS_GETXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
		unix.AT_SYMLINK_NOFOLLOW, uintptr(unsafe.Pointer(a)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
	runtime.KeepAlive(dest)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// Listxattrat lists the attribute names of entry name itself (listxattrat(2), Linux
// 6.13); ENOSYS on older kernels.
func Listxattrat(dirfd int, name string, dest []byte) (int, error) {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return 0, err
	}
	var buf uintptr
	if len(dest) > 0 {
		buf = uintptr(unsafe.Pointer(&dest[0]))
	}
	r, _, e := unix.Syscall6(unix.SYS_LISTXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
		unix.AT_SYMLINK_NOFOLLOW, buf, uintptr(len(dest)), 0)
	runtime.KeepAlive(dest)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}
