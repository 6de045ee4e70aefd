package fs

import (
	"bytes"
	"context"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/ezfs/ezfs/crypto"
	"github.com/ezfs/ezfs/zones"
	"golang.org/x/sys/unix"
)

// slowKeys seals and opens data keys with one zone key, each call taking as long as an
// unwrap by a remote provider may; a call whose context ends first fails with its error,
// as a provider's request would.
type slowKeys struct {
	key     []byte
	started chan struct{} // one value each time a call starts waiting
}

func (k *slowKeys) wait(ctx context.Context) error {
	select {
	case k.started <- struct{}{}:
	default:
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(300 * time.Millisecond):
		return nil
	}
}

func (k *slowKeys) NewFileKey(ctx context.Context, z *zones.Zone) ([]byte, []byte, crypto.FileID, error) {
	var id crypto.FileID
	if err := k.wait(ctx); err != nil {
		return nil, nil, id, err
	}
	id, _ = crypto.NewFileID()
	dek, _ := crypto.NewDEK()
	e, err := crypto.SealDEK(k.key, z.ID, z.Key, 1, id, dek)
	if err != nil {
		return nil, nil, id, err
	}
	rec, err := e.MarshalBinary()
	return dek, rec, id, err
}

func (k *slowKeys) Usable(string) error { return nil }

func (k *slowKeys) OpenFileKey(ctx context.Context, z *zones.Zone, rec []byte) ([]byte, *crypto.EDEK, error) {
	if err := k.wait(ctx); err != nil {
		return nil, nil, err
	}
	e, err := crypto.ParseEDEK(rec)
	if err != nil {
		return nil, nil, err
	}
	dek, err := e.Open(k.key, z.ID, e.KeyNameIn(z.Key))
	return dek, e, err
}

// underSignals runs op on a thread of its own and, once op waits for a key, keeps
// sending that thread SIGURG (the signal Go's runtime preempts its threads with) until
// op returns. The kernel answers each signal with a FUSE INTERRUPT of the request.
func underSignals(t *testing.T, started <-chan struct{}, op func() error) error {
	t.Helper()
	tids, done := make(chan int, 1), make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tids <- unix.Gettid()
		done <- op()
	}()
	tid := <-tids
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("returned before asking for a key: %v", err)
	}
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for sent := 0; ; sent++ {
		select {
		case err := <-done:
			if sent == 0 {
				t.Fatal("no signal was sent while the key was awaited")
			}
			return err
		case <-tick.C:
			if err := unix.Tgkill(os.Getpid(), tid, syscall.SIGURG); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestKeyWaitSurvivesSignals: a caller that catches signals while its create or open
// waits for a key gets its file, not EIO. Any signal makes the kernel interrupt the
// request, and Go programs get SIGURG all the time.
func TestKeyWaitSurvivesSignals(t *testing.T) {
	backing := t.TempDir()
	if err := os.Mkdir(filepath.Join(backing, "z"), 0o755); err != nil {
		t.Fatal(err)
	}
	zk, _ := crypto.NewZoneKey()
	keys := &slowKeys{key: zk, started: make(chan struct{}, 16)}
	var logs bytes.Buffer
	reg := zones.NewRegistry()
	mount := func() string {
		f, err := New(Options{Backing: backing, Keys: keys, Zones: reg, Logger: log.New(&logs, "", 0)})
		if err != nil {
			t.Fatal(err)
		}
		mnt := t.TempDir()
		srv, err := f.Mount(mnt, MountOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Unmount() })
		return filepath.Join(mnt, "z", "f")
	}
	z := &zones.Zone{Key: "k"}
	if err := unix.Setxattr(filepath.Join(backing, "z"), zones.XattrZone, z.Marker(), 0); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(backing, "z"), &st); err != nil {
		t.Fatal(err)
	}
	reg.Add(zones.Entry{Zone: z, Path: "z", Dev: st.Dev, Ino: st.Ino})

	want := []byte("written while signals arrive")
	p := mount()
	if err := underSignals(t, keys.started, func() error { return os.WriteFile(p, want, 0o644) }); err != nil {
		t.Fatalf("create: %v; daemon log: %s", err, logs.String())
	}
	// A second mount knows no key yet: its open asks for one again.
	p = mount()
	var got []byte
	if err := underSignals(t, keys.started, func() (err error) { got, err = os.ReadFile(p); return err }); err != nil {
		t.Fatalf("open: %v; daemon log: %s", err, logs.String())
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %q, want %q", got, want)
	}
}
