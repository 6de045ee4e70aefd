package fs

import (
	"context"
	"fmt"
	"log"
	"os"
	"runtime"
	"slices"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// On shared mounts the daemon makes backing objects, and writes the data of zone files,
// as the calling user: the thread that does it takes the caller's fsuid and fsgid and
// leaves CAP_SYS_RESOURCE, so the backing disk's quota hard limits and root-reserved
// blocks apply to the caller as they would on the disk itself, and a new object is the
// caller's from the start (no create as root, then chown). docs/DESIGN.md, "Decisions",
// 2026-12-01.
//
// Capabilities of the switched thread (its effective set; the permitted set stays):
//   - kept: CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH. The kernel has checked the
//     caller's permissions already (default_permissions), with supplementary groups
//     and ACLs the daemon's thread does not have; the backing disk must not refuse
//     what the kernel allowed. CAP_SYS_ADMIN and the rest are kept too: the FUSE
//     BACKING_OPEN ioctl needs CAP_SYS_ADMIN.
//   - dropped: CAP_SYS_RESOURCE (quota hard limits, ext4 reserved blocks), and the
//     ones the kernel clears when fsuid leaves 0 (capabilities(7)) and that are not
//     raised again: CAP_CHOWN, CAP_FOWNER, CAP_FSETID (set-group-ID is dropped from a
//     new file outside the caller's group, as on the disk), CAP_MKNOD (no device
//     nodes), CAP_LINUX_IMMUTABLE, CAP_MAC_OVERRIDE.
//
// The supplementary groups of the thread are emptied meanwhile, so that the daemon's
// own groups do not count as the caller's (set-group-ID, reserved-block groups).

// capsDropped are the capabilities the switched thread leaves out of its effective set.
var capsDropped = []int{
	unix.CAP_SYS_RESOURCE, unix.CAP_CHOWN, unix.CAP_FOWNER, unix.CAP_FSETID,
	unix.CAP_MKNOD, unix.CAP_LINUX_IMMUTABLE, unix.CAP_MAC_OVERRIDE,
}

// daemonIsRoot: only a daemon running as root can act as someone else.
var daemonIsRoot = os.Geteuid() == 0

// callerOf returns the caller of the request of ctx if the daemon acts as that caller:
// on a shared mount, a daemon running as root, and a caller other than root. Callers
// with uid 0 are served as before, by the daemon itself.
func (f *FS) callerOf(ctx context.Context) (*fuse.Caller, bool) {
	if !f.shared || !daemonIsRoot {
		return nil, false
	}
	c, ok := fuse.FromContext(ctx)
	if !ok || c.Uid == 0 {
		return nil, false
	}
	return c, true
}

// byCaller reports whether asCaller makes objects as the caller of ctx's request (so
// they need no chown afterwards).
func (f *FS) byCaller(ctx context.Context) bool {
	_, ok := f.callerOf(ctx)
	return ok
}

// asCaller runs fn as the caller of ctx's request on a shared mount (see above); on
// private mounts, for callers with uid 0 and for requests without a caller it just
// runs fn.
func (f *FS) asCaller(ctx context.Context, fn func() error) error {
	c, ok := f.callerOf(ctx)
	if !ok {
		return fn()
	}
	return onCallerThread(c.Uid, c.Gid, true, f.log, fn)
}

// asOpener runs fn, an OPEN, CREATE or TMPFILE of go-fuse's bridge, so that a plain
// file's passthrough backing, if fn registers one, is registered as the caller. The
// kernel does passthrough reads and writes with the credentials of the thread that
// made the FUSE_DEV_IOC_BACKING_OPEN ioctl (prepare_creds() in fuse_backing_open),
// not with those of the backing file's open, and go-fuse makes that ioctl after the
// node's Open or Create returned; plainHandle.PassthroughFd, called just before it,
// switches the thread (passthroughAsCaller). Everything else fn does runs as the
// daemon, key unwraps included.
func (k *rawFS) asOpener(h *fuse.InHeader, fn func() fuse.Status) fuse.Status {
	if !k.callers || !daemonIsRoot || h.Uid == 0 {
		return fn()
	}
	st := fuse.OK
	_ = onCallerThread(h.Uid, h.Gid, false, k.log, func() error { st = fn(); return nil })
	return st
}

// passthroughAsCaller switches the current thread to its caller if it runs an open
// under asOpener; false if it does, but cannot switch.
func passthroughAsCaller() bool {
	t, ok := callerThreads.Load(unix.Gettid())
	if !ok {
		return true
	}
	return t.(*callerThread).become() == nil
}

// callerThreads maps the thread IDs of the threads onCallerThread runs on to their
// *callerThread. A thread locked to a goroutine runs no other goroutine, so only that
// goroutine finds its entry.
var callerThreads sync.Map

// callerThread is a thread locked to a goroutine of onCallerThread, switched to the
// caller uid/gid (switched set), or ready to be.
type callerThread struct {
	uid, gid uint32
	switched bool
	// What become changed, for restore.
	caps         [2]unix.CapUserData
	groups       []int
	fsuid, fsgid int
}

// onCallerThread runs fn on a thread of its own as uid/gid: at once (eager), or from
// when passthroughAsCaller asks. The switch is per thread (setfsuid, setfsgid,
// setgroups and capset are raw system calls here, not the all-threads ones of package
// syscall), so fn runs on a new goroutine locked to its thread, which is put back as
// it was before it is unlocked. If that fails, the goroutine ends still locked, and
// the Go runtime then ends the thread rather than run other goroutines on it with the
// caller's credentials. A goroutine of its own is needed for that: go-fuse serves
// many requests one after another on its long-lived reader goroutines.
func onCallerThread(uid, gid uint32, eager bool, l *log.Logger, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		t := &callerThread{uid: uid, gid: gid}
		tid := unix.Gettid()
		callerThreads.Store(tid, t)
		var err error
		if eager {
			err = t.become()
		}
		if err == nil {
			err = fn()
		}
		callerThreads.Delete(tid)
		if rerr := t.restore(); rerr != nil {
			// Stay locked: the thread ends with this goroutine.
			l.Printf("thread %d not restored after acting as uid %d, ending it: %v", tid, uid, rerr)
			done <- err
			return
		}
		runtime.UnlockOSThread()
		done <- err
	}()
	return <-done
}

// become switches the thread to t's caller. A partial switch is undone by restore.
func (t *callerThread) become() error {
	if t.switched {
		return nil
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	if err := unix.Capget(&hdr, &t.caps[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	groups, err := unix.Getgroups()
	if err != nil {
		return fmt.Errorf("getgroups: %w", err)
	}
	t.groups = groups
	t.fsuid, t.fsgid = currentFsuid(), currentFsgid()
	t.switched = true
	if err := unix.Setgroups(nil); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	// fsgid first: setfsgid needs CAP_SETGID, which setfsuid leaves anyway.
	_, _ = unix.SetfsgidRetGid(int(t.gid))
	_, _ = unix.SetfsuidRetUid(int(t.uid))
	if currentFsuid() != int(t.uid) || currentFsgid() != int(t.gid) {
		return fmt.Errorf("setfsuid/setfsgid %d/%d did not take", t.uid, t.gid)
	}
	// The fsuid change cleared CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and others from
	// the effective set; raise again what is kept, leave out what is dropped.
	caps := t.caps
	for _, c := range capsDropped {
		caps[c/32].Effective &^= 1 << (c % 32)
	}
	if err := unix.Capset(&hdr, &caps[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	return nil
}

// restore puts the thread back as become found it, and checks that it is.
func (t *callerThread) restore() error {
	if !t.switched {
		return nil
	}
	// fsuid first: back at 0 it raises the file capabilities again, and capset then
	// sets the effective set exactly as it was.
	_, _ = unix.SetfsuidRetUid(t.fsuid)
	_, _ = unix.SetfsgidRetGid(t.fsgid)
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	if err := unix.Capset(&hdr, &t.caps[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	if err := unix.Setgroups(t.groups); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	var now [2]unix.CapUserData
	if err := unix.Capget(&hdr, &now[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	groups, err := unix.Getgroups()
	if err != nil {
		return fmt.Errorf("getgroups: %w", err)
	}
	if now != t.caps || !slices.Equal(groups, t.groups) || currentFsuid() != t.fsuid || currentFsgid() != t.fsgid {
		return fmt.Errorf("credentials differ after restore")
	}
	t.switched = false
	return nil
}

// currentFsuid and currentFsgid read the thread's fsuid and fsgid: setfsuid(-1) changes
// nothing and returns the current one.
func currentFsuid() int { prev, _ := unix.SetfsuidRetUid(-1); return prev }
func currentFsgid() int { prev, _ := unix.SetfsgidRetGid(-1); return prev }

// errnoOr returns err unless it is an errno 0, which is no error.
func errnoOr(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}
