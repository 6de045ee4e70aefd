package integration

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ezfs/ezfs/control"
)

// TestKeystoreBackup: a backup made through the daemon while a writer creates files
// restores a deleted keystore (`init --from-backup`), and then every file written
// before the backup, and every file written during it (their key version is in the
// backup), reads back byte-identical. Files written after the backup under a key
// version made after it (a roll) cannot be read, and answer an error, never other
// bytes (ENOKEY): the test checks that too. A backup is mode 0600, never replaces a file
// without --force, is refused inside the mount; the offline one refuses a mounted
// keystore; a restore refuses to replace a keystore.
func TestKeystoreBackup(t *testing.T) {
	e := newEnv(t)
	zone := e.zone("z", "k")
	r := rand.New(rand.NewSource(15))
	files := map[string][]byte{} // path in the zone -> contents, once written and closed
	var mu sync.Mutex
	write := func(name string, r *rand.Rand) {
		data := make([]byte, r.Intn(3*4096+100))
		r.Read(data)
		if err := os.WriteFile(filepath.Join(zone, name), data, 0o644); err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		files[name] = data
		mu.Unlock()
	}
	for i := 0; i < 40; i++ {
		write(fmt.Sprintf("before%03d", i), r)
	}

	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		r := rand.New(rand.NewSource(16))
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			write(fmt.Sprintf("during%05d", i), r)
		}
	}()
	time.Sleep(200 * time.Millisecond)
	file := filepath.Join(t.TempDir(), "keystore.backup")
	e.run("keystore", "backup", "--mount", e.mnt, file)
	time.Sleep(100 * time.Millisecond)
	close(stop)
	<-done

	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v", st, err)
	}
	failsCode(t, nil, control.CodeBusy, "exists", "keystore", "backup", "--mount", e.mnt, file)
	other := filepath.Join(t.TempDir(), "old.backup")
	if err := os.WriteFile(other, []byte("an older backup"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.run("keystore", "backup", "--mount", e.mnt, "--force", other)
	if st, err := os.Stat(other); err != nil || st.Mode().Perm() != 0o600 || st.Size() < 4096 {
		t.Errorf("backup --force over a file: %v %v", st, err)
	}
	failsCode(t, nil, control.CodeUsage, "inside the mount", "keystore", "backup", "--mount", e.mnt, filepath.Join(e.mnt, "ks.backup"))
	// Not on the disk it is to survive, nor over the live database, nor through a
	// symlink a user planted where root writes it.
	failsCode(t, nil, control.CodeUsage, "inside "+e.backing, "keystore", "backup", "--mount", e.mnt, filepath.Join(e.backing, "ks.backup"))
	failsCode(t, nil, control.CodeUsage, "inside", "keystore", "backup", "--force", "--mount", e.mnt, filepath.Join(e.ksDir(), "keystore.db"))
	victim := filepath.Join(t.TempDir(), "victim")
	writeFile(t, victim, "not a backup")
	link := filepath.Join(t.TempDir(), "planted")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	failsCode(t, nil, control.CodeUsage, "not a regular file", "keystore", "backup", "--force", "--mount", e.mnt, link)
	if got := readFile(t, victim); got != "not a backup" {
		t.Errorf("backup wrote through a symlink: the target now holds %d bytes", len(got))
	}
	failsCode(t, nil, control.CodeBusy, "in use", "keystore", "backup", "--keystore", e.ksDir(), filepath.Join(t.TempDir(), "offline"))
	if !bytes.Contains([]byte(readFile(t, filepath.Join(e.ksDir(), "audit.log"))), []byte(`"op":"keystore.backup","path":"`+file)) {
		t.Errorf("the backup through the daemon is not audited")
	}

	// Written after the backup under a version it does not hold.
	e.run("key", "roll", "--mount", e.mnt, "k")
	after := map[string]bool{}
	for i := 0; i < 5; i++ {
		name := fmt.Sprintf("after%d", i)
		write(name, r)
		after[name] = true
	}
	e.umount()

	if err := os.RemoveAll(e.ksDir()); err != nil {
		t.Fatal(err)
	}
	failsCode(t, nil, control.CodeUsage, "is not a keystore backup", "init", e.backing, "--from-backup", e.backingOf(filepath.Join(zone, "before000")))
	e.run("init", e.backing, "--from-backup", file)
	failsCode(t, nil, control.CodeBusy, "already has a keystore", "init", e.backing, "--from-backup", file)
	offline := filepath.Join(t.TempDir(), "offline.backup")
	e.run("keystore", "backup", "--keystore", e.ksDir(), offline)
	e.mount()
	if k := e.describeKey("k"); len(k.Versions) != 1 {
		t.Errorf("restored key has %d versions, want the backup's 1", len(k.Versions))
	}
	during := 0
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(zone, name))
		switch {
		case after[name] && err == nil:
			t.Errorf("%s (written under a version the backup lacks) read as %d bytes", name, len(got))
		case after[name] && errnoOf(err) != syscall.ENOKEY:
			t.Errorf("%s (written under a version the backup lacks): %v, want ENOKEY", name, err)
		case after[name]:
		case err != nil:
			t.Errorf("read %s: %v", name, err)
		case !bytes.Equal(got, want):
			t.Errorf("%s: contents differ after the restore", name)
		default:
			if name[:6] == "during" {
				during++
			}
		}
	}
	if during == 0 {
		t.Errorf("no file was written during the backup")
	}
	t.Logf("%d files written before, %d during the backup read back; %d after it do not", 40, during, len(after))
	audit := readFile(t, filepath.Join(e.ksDir(), "audit.log"))
	for _, op := range []string{`"op":"keystore.restore"`, `"op":"keystore.backup"`} {
		if !bytes.Contains([]byte(audit), []byte(op)) {
			t.Errorf("audit log has no %s line:\n%s", op, audit)
		}
	}
}
