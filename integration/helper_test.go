package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary doubles as a helper process (started with helperEnv set): it reads
// one JSON request a line on stdin, makes the system call asked for, and answers one
// JSON line on stdout. It can become another user and keep directory descriptors
// across requests, so a test can make calls as another uid, relative to descriptors
// opened before the backing directory changed, or relative to a working directory
// reached by relative chdir steps.
const helperEnv = "EZFS_ITEST_HELPER"

// hreq is one request to a helper.
type hreq struct {
	Op string `json:"op"`
	// At names a directory descriptor kept by an earlier opendir; "" is the working
	// directory.
	At    string `json:"at,omitempty"`
	Path  string `json:"path,omitempty"`
	Path2 string `json:"path2,omitempty"` // rename/link destination, symlink target
	Mode  uint32 `json:"mode,omitempty"`
	UID   int    `json:"uid,omitempty"`
	GID   int    `json:"gid,omitempty"`
	Size  int64  `json:"size,omitempty"`
	Attr  string `json:"attr,omitempty"`
	Data  string `json:"data,omitempty"`
	Name  string `json:"name,omitempty"` // opendir: the name the descriptor is kept under
	Ms    int    `json:"ms,omitempty"`   // sleep, loop: milliseconds
	Ops   []hreq `json:"ops,omitempty"`  // loop: the requests repeated
	// Safe: the caller itself never follows a symbolic link. The path is resolved
	// with openat2(RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS) to an O_PATH descriptor
	// (of the object, or of its parent for the calls that name an entry), and the call
	// is made on that descriptor (through /proc/self/fd/N) or on the entry's name in
	// it, never following a link in the last component. Whatever follows a link then
	// is the file system's own doing.
	Safe bool `json:"safe,omitempty"`
}

// hres is a helper's answer: Err is the errno's name ("" for success, or a word
// for a request the helper refused), Data what a read, listing, stat or loop returned.
type hres struct {
	Err  string `json:"err"`
	Data string `json:"data,omitempty"`
}

func (r hreq) String() string {
	s := r.Op
	if r.At != "" {
		s += " @" + r.At
	}
	if r.Path != "" {
		s += " " + r.Path
	}
	if r.Path2 != "" {
		s += " " + r.Path2
	}
	if r.Attr != "" {
		s += " " + r.Attr
	}
	return s
}

// helper is a running helper process.
type helper struct {
	t   *testing.T
	cmd *exec.Cmd
	in  *json.Encoder
	out *bufio.Scanner
}

// startHelper starts a helper that runs as uid/gid (with no supplementary groups);
// 0 stays root. It is stopped in the test's cleanup.
func startHelper(t *testing.T, uid, gid int) *helper {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	cmd.Dir = "/"
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{t: t, cmd: cmd, in: json.NewEncoder(stdin), out: bufio.NewScanner(stdout)}
	h.out.Buffer(make([]byte, 1<<20), 16<<20)
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	if uid != 0 || gid != 0 {
		if r := h.do(hreq{Op: "become", UID: uid, GID: gid}); r.Err != "" {
			t.Fatalf("helper: become %d:%d: %s", uid, gid, r.Err)
		}
	}
	return h
}

// do sends one request and waits (at most a minute) for its answer; a helper that
// fails to answer fails the test.
func (h *helper) do(r hreq) hres {
	h.t.Helper()
	res, err := h.try(r)
	if err != nil {
		h.t.Fatal(err)
	}
	return res
}

// try is do for other goroutines than the test's: it returns the helper's failure.
func (h *helper) try(r hreq) (hres, error) {
	if err := h.in.Encode(r); err != nil {
		return hres{}, fmt.Errorf("helper: send %s: %v", r, err)
	}
	got := make(chan bool, 1)
	go func() { got <- h.out.Scan() }()
	select {
	case ok := <-got:
		if !ok {
			return hres{}, fmt.Errorf("helper: no answer to %s: %v", r, h.out.Err())
		}
	case <-time.After(time.Minute):
		_ = h.cmd.Process.Kill()
		return hres{}, fmt.Errorf("helper: %s did not return within a minute", r)
	}
	var res hres
	if err := json.Unmarshal(h.out.Bytes(), &res); err != nil {
		return hres{}, fmt.Errorf("helper: answer %q to %s: %v", h.out.Bytes(), r, err)
	}
	return res, nil
}

// helperMain serves requests until stdin closes.
func helperMain() int {
	s := &helperState{fds: map[string]int{}}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 16<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var r hreq
		if err := json.Unmarshal(in.Bytes(), &r); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 2
		}
		data, err := s.serve(r)
		res := hres{Data: data}
		if err != nil {
			res.Err = errName(err)
		}
		if err := out.Encode(res); err != nil {
			return 2
		}
	}
	return 0
}

func errName(err error) string {
	if en, ok := err.(syscall.Errno); ok {
		if n := unix.ErrnoName(en); n != "" {
			return n
		}
	}
	return err.Error()
}

type helperState struct {
	fds map[string]int
}

func (s *helperState) at(r hreq) (int, error) {
	if r.At == "" {
		return unix.AT_FDCWD, nil
	}
	fd, ok := s.fds[r.At]
	if !ok {
		return -1, fmt.Errorf("no descriptor %q", r.At)
	}
	return fd, nil
}

const safeResolve = unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// object returns a name by which path (relative to r.At) is reached for the calls
// that have no *at form: in safe mode /proc/self/fd/N of an O_PATH descriptor of it,
// refused with "symlink" where the object is a symbolic link (those calls would follow
// it); otherwise the path itself, under /proc/self/fd/N of r.At if it is relative.
func (s *helperState) object(r hreq) (string, func(), error) {
	dirfd, err := s.at(r)
	if err != nil {
		return "", nil, err
	}
	if !r.Safe {
		if dirfd == unix.AT_FDCWD || filepath.IsAbs(r.Path) {
			return r.Path, func() {}, nil
		}
		return procFD(dirfd) + "/" + r.Path, func() {}, nil
	}
	fd, err := unix.Openat2(dirfd, r.Path, &unix.OpenHow{Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: safeResolve})
	if err != nil {
		return "", nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return "", nil, err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		unix.Close(fd)
		return "", nil, fmt.Errorf("symlink")
	}
	return procFD(fd), func() { unix.Close(fd) }, nil
}

// entry returns a directory descriptor and a name in it for path (relative to r.At):
// in safe mode an O_PATH descriptor of the parent reached without following links.
func (s *helperState) entry(r hreq, path string) (int, string, func(), error) {
	dirfd, err := s.at(r)
	if err != nil {
		return -1, "", nil, err
	}
	if !r.Safe {
		return dirfd, path, func() {}, nil
	}
	fd, err := unix.Openat2(dirfd, filepath.Dir(path), &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: safeResolve})
	if err != nil {
		return -1, "", nil, err
	}
	return fd, filepath.Base(path), func() { unix.Close(fd) }, nil
}

// open opens path (relative to r.At) with flags, never blocking on a fifo.
func (s *helperState) open(r hreq, flags int, mode uint32) (int, error) {
	dirfd, err := s.at(r)
	if err != nil {
		return -1, err
	}
	flags |= unix.O_CLOEXEC | unix.O_NONBLOCK
	if r.Safe {
		return unix.Openat2(dirfd, r.Path, &unix.OpenHow{Flags: uint64(flags | unix.O_NOFOLLOW), Mode: uint64(mode), Resolve: safeResolve})
	}
	return unix.Openat(dirfd, r.Path, flags, mode)
}

func (s *helperState) serve(r hreq) (string, error) {
	switch r.Op {
	case "become":
		if err := syscall.Setgroups([]int{}); err != nil {
			return "", err
		}
		if err := syscall.Setgid(r.GID); err != nil {
			return "", err
		}
		return "", syscall.Setuid(r.UID)
	case "chdir":
		return "", unix.Chdir(r.Path)
	case "sleep":
		time.Sleep(time.Duration(r.Ms) * time.Millisecond)
		return "", nil
	case "opendir":
		fd, err := s.open(r, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return "", err
		}
		if old, ok := s.fds[r.Name]; ok {
			unix.Close(old)
		}
		s.fds[r.Name] = fd
		return "", nil
	case "close":
		if fd, ok := s.fds[r.Name]; ok {
			unix.Close(fd)
			delete(s.fds, r.Name)
		}
		return "", nil
	case "loop":
		// The requests again and again for r.Ms; the answer counts the calls and
		// lists every distinct piece of data they returned.
		seen := map[string]bool{}
		var data []string
		n := 0
		for end := time.Now().Add(time.Duration(r.Ms) * time.Millisecond); time.Now().Before(end); {
			for _, o := range r.Ops {
				d, _ := s.serve(o)
				n++
				if d != "" && !seen[d] && len(seen) < 1000 {
					seen[d] = true
					data = append(data, d)
				}
			}
		}
		return fmt.Sprintf("%d calls\n%s", n, strings.Join(data, "\n")), nil
	case "stat":
		var st unix.Stat_t
		dirfd, base, done, err := s.entry(r, r.Path)
		if err != nil {
			return "", err
		}
		defer done()
		if err := unix.Fstatat(dirfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return "", err
		}
		return fmt.Sprintf("mode=%o uid=%d gid=%d size=%d ino=%d", st.Mode, st.Uid, st.Gid, st.Size, st.Ino), nil
	case "create":
		fd, err := s.open(r, unix.O_CREAT|unix.O_WRONLY, r.Mode)
		if err != nil {
			return "", err
		}
		return "", unix.Close(fd)
	case "read":
		fd, err := s.open(r, unix.O_RDONLY, 0)
		if err != nil {
			return "", err
		}
		defer unix.Close(fd)
		buf := make([]byte, 1<<16)
		n, err := unix.Read(fd, buf)
		if n < 0 {
			n = 0
		}
		return string(buf[:n]), err
	case "write":
		fd, err := s.open(r, unix.O_WRONLY, 0)
		if err != nil {
			return "", err
		}
		defer unix.Close(fd)
		_, err = unix.Write(fd, []byte(r.Data))
		return "", err
	case "ftruncate":
		fd, err := s.open(r, unix.O_WRONLY, 0)
		if err != nil {
			return "", err
		}
		defer unix.Close(fd)
		return "", unix.Ftruncate(fd, r.Size)
	case "readdir":
		fd, err := s.open(r, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return "", err
		}
		f := os.NewFile(uintptr(fd), r.Path)
		defer f.Close()
		names, err := f.Readdirnames(-1)
		return strings.Join(names, " "), err
	case "chmod", "truncate", "setxattr", "removexattr", "getxattr", "listxattr":
		p, done, err := s.object(r)
		if err != nil {
			return "", err
		}
		defer done()
		switch r.Op {
		case "chmod":
			return "", unix.Fchmodat(unix.AT_FDCWD, p, r.Mode, 0)
		case "truncate":
			return "", unix.Truncate(p, r.Size)
		case "setxattr":
			return "", unix.Setxattr(p, r.Attr, []byte(r.Data), 0)
		case "removexattr":
			return "", unix.Removexattr(p, r.Attr)
		case "getxattr":
			buf := make([]byte, 1<<16)
			n, err := unix.Getxattr(p, r.Attr, buf)
			if err != nil {
				return "", err
			}
			return string(buf[:n]), nil
		default:
			buf := make([]byte, 1<<16)
			n, err := unix.Listxattr(p, buf)
			if err != nil {
				return "", err
			}
			return strings.ReplaceAll(strings.TrimRight(string(buf[:n]), "\x00"), "\x00", " "), nil
		}
	}
	// The calls that name an entry in a directory.
	dirfd, base, done, err := s.entry(r, r.Path)
	if err != nil {
		return "", err
	}
	defer done()
	switch r.Op {
	case "chown":
		return "", unix.Fchownat(dirfd, base, r.UID, r.GID, unix.AT_SYMLINK_NOFOLLOW)
	case "utimens":
		ts := []unix.Timespec{unix.NsecToTimespec(981173106e9), unix.NsecToTimespec(981173106e9)}
		return "", unix.UtimesNanoAt(dirfd, base, ts, unix.AT_SYMLINK_NOFOLLOW)
	case "mkdir":
		return "", unix.Mkdirat(dirfd, base, r.Mode)
	case "mknod":
		return "", unix.Mknodat(dirfd, base, r.Mode, 0)
	case "mkfifo":
		// As libc's mkfifo: mknod of a fifo.
		return "", unix.Mknodat(dirfd, base, r.Mode|unix.S_IFIFO, 0)
	case "symlink":
		return "", unix.Symlinkat(r.Path2, dirfd, base)
	case "unlink":
		return "", unix.Unlinkat(dirfd, base, 0)
	case "rmdir":
		return "", unix.Unlinkat(dirfd, base, unix.AT_REMOVEDIR)
	case "link", "rename":
		dirfd2, base2, done2, err := s.entry(r, r.Path2)
		if err != nil {
			return "", err
		}
		defer done2()
		if r.Op == "link" {
			return "", unix.Linkat(dirfd, base, dirfd2, base2, 0)
		}
		return "", unix.Renameat(dirfd, base, dirfd2, base2)
	}
	return "", fmt.Errorf("unknown request %q", r.Op)
}

// procFD names the file open as fd in the calling process.
func procFD(fd int) string { return fmt.Sprintf("/proc/self/fd/%d", fd) }
