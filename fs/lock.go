package fs

import (
	"context"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Locks of files on the mount are held by the daemon as open file description locks
// (F_OFD_* fcntl locks, and flock) on the backing descriptor of the open file that took
// them: the kernel gives the daemon no process to hold POSIX locks for.

// maxLockPoll is the longest pause between two tries of a lock that has to wait.
const maxLockPoll = 10 * time.Millisecond

// getLock reports a lock that would conflict with lk on fd.
func getLock(fd int, lk *fuse.FileLock, out *fuse.FileLock) syscall.Errno {
	var flk syscall.Flock_t
	lk.ToFlockT(&flk)
	errno := gofs.ToErrno(syscall.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &flk))
	out.FromFlockT(&flk)
	return errno
}

// setLock sets or clears lk on fd without waiting; a conflicting lock is EAGAIN.
func setLock(fd int, lk *fuse.FileLock, flags uint32) syscall.Errno {
	if flags&fuse.FUSE_LK_FLOCK != 0 {
		var op int
		switch lk.Typ {
		case syscall.F_RDLCK:
			op = syscall.LOCK_SH
		case syscall.F_WRLCK:
			op = syscall.LOCK_EX
		case syscall.F_UNLCK:
			op = syscall.LOCK_UN
		default:
			return syscall.EINVAL
		}
		return gofs.ToErrno(syscall.Flock(fd, op|syscall.LOCK_NB))
	}
	var flk syscall.Flock_t
	lk.ToFlockT(&flk)
	errno := gofs.ToErrno(syscall.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &flk))
	if errno == syscall.EACCES { // POSIX allows either for a held lock
		errno = syscall.EAGAIN
	}
	return errno
}

// waitLock sets lk on fd, waiting while another open file holds a conflicting lock.
// It waits by trying again, not in a blocking fcntl or flock, so that the wait ends
// with EINTR when the kernel interrupts the request: the caller caught a signal, as
// `flock -w` and lock timeouts built on alarm(2) arrange. The kernel restarts the call
// where the caller's handler asks for that. A blocking call in the daemon could not be
// called off, and the caller would wait on past its timeout.
func waitLock(ctx context.Context, fd int, lk *fuse.FileLock, flags uint32) syscall.Errno {
	pause := time.Millisecond / 4
	for {
		errno := setLock(fd, lk, flags)
		if errno != syscall.EAGAIN {
			return errno
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return syscall.EINTR
		case <-t.C:
		}
		pause = min(2*pause, maxLockPoll)
	}
}

// dropLocks releases every lock held through fd. Closing fd is not enough where go-fuse
// handed it to the kernel for passthrough: the kernel keeps that open file description
// while any open of the file is a passthrough one, and with it the locks of the open
// that has been closed.
func dropLocks(fd int) {
	_ = syscall.Flock(fd, syscall.LOCK_UN)
	unlock := syscall.Flock_t{Type: syscall.F_UNLCK} // from offset 0 to the end
	_ = syscall.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &unlock)
}
