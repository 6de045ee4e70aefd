// Package etcdtest runs real etcd servers for tests: a cluster of one or three members
// on free 127.0.0.1 ports, in a test's temporary folder, stopped when the test ends.
// The server is Debian's etcd-server (scripts/deps.sh installs it), or the binary
// EZFS_ETCD_BIN names. Without one a test fails when CI=true, and is skipped
// otherwise.
package etcdtest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Cluster is a running etcd cluster.
type Cluster struct {
	// TLS holds the cluster's certificates when it was started with TLS (clients
	// must present ClientCert); nil for plain HTTP.
	TLS *TLSFiles

	t                      testing.TB
	bin                    string
	members                []*member
	rootUser, rootPassword string // after EnableAuth
}

// Options change how Start starts a cluster.
type Options struct {
	// TLS serves clients over TLS only, with client certificates required.
	TLS bool
}

type member struct {
	name, dir    string
	client, peer string // 127.0.0.1:PORT
	args         []string
	cmd          *exec.Cmd
	done         chan struct{}
	log          string
}

// Bin is the etcd server binary: EZFS_ETCD_BIN, or etcd on PATH.
func Bin() (string, error) {
	if b := os.Getenv("EZFS_ETCD_BIN"); b != "" {
		return exec.LookPath(b)
	}
	return exec.LookPath("etcd")
}

// Start starts a cluster of n members and waits until it has a leader.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	return StartWith(t, n, Options{})
}

// StartWith is Start with options.
func StartWith(t testing.TB, n int, o Options) *Cluster {
	t.Helper()
	bin, err := Bin()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("etcd server not found (scripts/deps.sh installs etcd-server): %v", err)
		}
		t.Skipf("etcd server not found (run scripts/deps.sh, or set EZFS_ETCD_BIN): %v", err)
	}
	c := &Cluster{t: t, bin: bin}
	dir := t.TempDir()
	if o.TLS {
		c.TLS = makeTLS(t, dir)
	}
	var initial []string
	for i := range n {
		m := &member{name: fmt.Sprintf("m%d", i), dir: filepath.Join(dir, fmt.Sprintf("m%d", i)),
			client: freeAddr(t), peer: freeAddr(t)}
		m.log = m.dir + ".log"
		c.members = append(c.members, m)
		initial = append(initial, m.name+"=http://"+m.peer)
	}
	for _, m := range c.members {
		m.args = []string{"--name", m.name, "--data-dir", m.dir,
			"--listen-client-urls", c.scheme() + m.client, "--advertise-client-urls", c.scheme() + m.client,
			"--listen-peer-urls", "http://" + m.peer, "--initial-advertise-peer-urls", "http://" + m.peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", filepath.Base(dir),
			"--heartbeat-interval", "50", "--election-timeout", "500",
			"--logger", "zap", "--log-outputs", m.log}
		if c.TLS != nil {
			m.args = append(m.args, "--cert-file", c.TLS.ServerCert, "--key-file", c.TLS.ServerKey,
				"--trusted-ca-file", c.TLS.CA, "--client-cert-auth")
		}
		c.start(m)
	}
	t.Cleanup(c.stopAll)
	c.WaitHealthy()
	return c
}

// freeAddr is a 127.0.0.1 port nothing listens on now.
func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (c *Cluster) start(m *member) {
	c.t.Helper()
	m.cmd = exec.Command(c.bin, m.args...)
	if err := m.cmd.Start(); err != nil {
		c.t.Fatalf("start etcd %s: %v", m.name, err)
	}
	m.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(m.cmd, m.done)
}

// Endpoints are the members' client addresses, HOST:PORT.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.members {
		out = append(out, m.client)
	}
	return out
}

// Location is an ezfs keystore location on this cluster: etcd://EP,EP.../prefix.
func (c *Cluster) Location(prefix string) string {
	return "etcd://" + strings.Join(c.Endpoints(), ",") + "/" + prefix
}

// Stop stops member i (SIGTERM, then SIGKILL after 10 s).
func (c *Cluster) Stop(i int) {
	c.t.Helper()
	m := c.members[i]
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
	m.cmd = nil
}

// Restart starts stopped member i again on its data and ports.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if c.members[i].cmd == nil {
		c.start(c.members[i])
	}
}

func (c *Cluster) stopAll() {
	for i := range c.members {
		c.Stop(i)
	}
	if c.t.Failed() {
		for _, m := range c.members {
			if raw, err := os.ReadFile(m.log); err == nil {
				c.t.Logf("etcd %s log (tail):\n%s", m.name, tail(string(raw), 3000))
			}
		}
	}
}

// WaitHealthy waits (up to 30 s) until every running member reports a healthy
// cluster (it has a leader).
func (c *Cluster) WaitHealthy() {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, m := range c.members {
		for m.cmd != nil && !c.healthy(m.client) {
			if time.Now().After(deadline) {
				c.t.Fatalf("etcd %s not healthy after 30 s; log:\n%s", m.name, c.logTail(m))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func (c *Cluster) scheme() string {
	if c.TLS != nil {
		return "https://"
	}
	return "http://"
}

func (c *Cluster) healthy(addr string) bool {
	hc := http.Client{Timeout: time.Second}
	if c.TLS != nil {
		hc.Transport = &http.Transport{TLSClientConfig: c.TLS.clientTLS(c.t)}
	}
	resp, err := hc.Get(c.scheme() + addr + "/health")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (c *Cluster) logTail(m *member) string {
	raw, _ := os.ReadFile(m.log)
	return tail(string(raw), 3000)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
