// Package control owns the daemon's control socket: where it lives, how a command finds
// the daemon serving a path (through /proc/self/mountinfo), the request and response
// encoding (one JSON object each way per connection), and the types exchanged.
package control

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// SocketDir holds one socket per mount, named after the mountpoint.
var SocketDir = "/run/ezfs"

// FSType is the file system type of an ezfs mount in mountinfo.
const FSType = "fuse.ezfs"

// SocketPath is the control socket of the daemon serving mountpoint.
func SocketPath(mountpoint string) string {
	sum := sha256.Sum256([]byte(mountpoint))
	return filepath.Join(SocketDir, hex.EncodeToString(sum[:8])+".sock")
}

// Request is what a command sends.
type Request struct {
	Op   string          `json:"op"`
	Args json.RawMessage `json:"args,omitempty"`
}

// Response is what the daemon answers.
type Response struct {
	Error string `json:"error,omitempty"`
	// Code classifies Error (errors.go); empty from daemons older than the codes.
	Code   Code            `json:"code,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// ErrNoDaemon means no daemon answers on the socket.
var ErrNoDaemon = errors.New("no ezfs daemon answers")

// Call sends op with args to the daemon at sock and decodes the result into result.
func Call(sock, op string, args, result any) error {
	conn, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		return &Error{Code: CodeUnavailable, Msg: fmt.Sprintf("%v on %s: %v", ErrNoDaemon, sock, err), wrapped: ErrNoDaemon}
	}
	defer conn.Close()
	req := Request{Op: op}
	if args != nil {
		if req.Args, err = json.Marshal(args); err != nil {
			return err
		}
	}
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return fmt.Errorf("send to daemon: %w", err)
	}
	var resp Response
	if err := json.NewDecoder(bufio.NewReader(conn)).Decode(&resp); err != nil {
		return fmt.Errorf("read daemon answer: %w", err)
	}
	if resp.Error != "" {
		code := resp.Code
		if code == "" {
			code = CodeInternal
		}
		return &Error{Code: code, Msg: resp.Error}
	}
	if result != nil && len(resp.Result) > 0 {
		return json.Unmarshal(resp.Result, result)
	}
	return nil
}

// Handler answers one request. Classify gives the code of each error it returns.
type Handler func(ctx context.Context, op string, args json.RawMessage) (any, error)

// Classify maps an error to its code (the daemon's one table of them).
type Classify func(error) Code

// Server answers requests on a listener until Close.
type Server struct {
	ln *net.UnixListener
	wg sync.WaitGroup
}

// Serve answers requests on ln in the background. Only root and the daemon's own user
// may talk to it (peer credentials), on top of the socket's 0600 mode. Each error h
// returns is answered with its code from classify.
func Serve(ln *net.UnixListener, h Handler, classify Classify) *Server {
	s := &Server{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				serveConn(conn, h, classify)
			}()
		}
	}()
	return s
}

// Close stops accepting and waits for requests under way to be answered.
func (s *Server) Close() {
	s.ln.Close()
	s.wg.Wait()
}

func peerAllowed(conn *net.UnixConn) bool {
	raw, err := conn.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	_ = raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	return err == nil && cred != nil && (cred.Uid == 0 || int(cred.Uid) == os.Geteuid())
}

func serveConn(conn *net.UnixConn, h Handler, classify Classify) {
	defer conn.Close()
	enc := json.NewEncoder(conn)
	if !peerAllowed(conn) {
		_ = enc.Encode(Response{Code: CodePermission, Error: "permission denied: only root may control an ezfs mount"})
		return
	}
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	var req Request
	if err := json.NewDecoder(bufio.NewReader(conn)).Decode(&req); err != nil {
		_ = enc.Encode(Response{Code: CodeUsage, Error: "bad request: " + err.Error()})
		return
	}
	_ = conn.SetReadDeadline(time.Time{})
	res, err := h(context.Background(), req.Op, req.Args)
	var resp Response
	if err == nil && res != nil {
		resp.Result, err = json.Marshal(res)
	}
	if err != nil {
		resp.Error, resp.Code = strings.ReplaceAll(err.Error(), "\n", " "), classify(err)
	}
	_ = enc.Encode(resp)
}

// Mount is an ezfs mount found in mountinfo.
type Mount struct {
	Mountpoint string `json:"mountpoint"`
	Backing    string `json:"backing"`
}

// Mounts lists the ezfs mounts of this mount namespace.
func Mounts() ([]Mount, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []Mount
	for _, line := range strings.Split(string(data), "\n") {
		// id parent maj:min root mountpoint opts [optional...] - fstype source superopts
		f := strings.Fields(line)
		sep := -1
		for i, x := range f {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+2 >= len(f) || len(f) < 5 || f[sep+1] != FSType {
			continue
		}
		out = append(out, Mount{Mountpoint: unescape(f[4]), Backing: unescape(f[sep+2])})
	}
	return out, nil
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s)+0 && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Canonical makes a path absolute and resolves symlinks in its existing part.
func Canonical(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		return r, nil
	}
	// The last element may not exist yet; resolve its parent.
	dir, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	}
	return filepath.Join(dir, filepath.Base(abs)), nil
}

// CanonicalFile makes the path of a file to be written absolute and resolves symlinks
// in its folder, never in its last name: a symlink there is refused where the file is
// written (keystore backup), not followed.
func CanonicalFile(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	dir, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	}
	return filepath.Join(dir, filepath.Base(abs)), nil
}

// ErrNotInMount means a path is outside every ezfs mount.
var ErrNotInMount = errors.New("is not inside an ezfs mount")

// FindMount returns the mount holding path and path relative to its mountpoint.
func FindMount(path string) (Mount, string, error) {
	p, err := Canonical(path)
	if err != nil {
		return Mount{}, "", err
	}
	ms, err := Mounts()
	if err != nil {
		return Mount{}, "", err
	}
	best := -1
	for i, m := range ms {
		if (p == m.Mountpoint || strings.HasPrefix(p, strings.TrimSuffix(m.Mountpoint, "/")+"/")) &&
			(best < 0 || len(m.Mountpoint) > len(ms[best].Mountpoint)) {
			best = i
		}
	}
	if best < 0 {
		return Mount{}, "", fmt.Errorf("%s %w", path, ErrNotInMount)
	}
	rel, _ := filepath.Rel(ms[best].Mountpoint, p)
	if rel == "." {
		rel = ""
	}
	return ms[best], rel, nil
}

// OnlyMount returns the single ezfs mount on the host, or says why there is none.
func OnlyMount() (Mount, error) {
	ms, err := Mounts()
	if err != nil {
		return Mount{}, err
	}
	switch len(ms) {
	case 0:
		return Mount{}, Errorf(CodeNotFound, "no ezfs mount found (mount one with 'ezfs mount')")
	case 1:
		return ms[0], nil
	}
	return Mount{}, Errorf(CodeUsage, "%d ezfs mounts found: choose one with --mount", len(ms))
}
