package integration

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ezfs/ezfs/control"
)

// minRotationEnv lowers the daemon's minimum rotation period (1h) for tests.
const minRotationEnv = "EZFS_TEST_MIN_ROTATION"

func (e *env) describeKey(name string) control.KeyInfo {
	e.t.Helper()
	var k control.KeyInfo
	decodeJSON(e.t, e.run("key", "describe", "--json", "--mount", e.mnt, name), &k)
	return k
}

// autoRolls counts the audit log's rolls of key made by its policy.
func (e *env) autoRolls(key string) int {
	e.t.Helper()
	n := 0
	for _, line := range strings.Split(readFile(e.t, filepath.Join(e.ksDir(), "audit.log")), "\n") {
		if strings.Contains(line, `"op":"key.roll"`) && strings.Contains(line, `"by":"policy"`) &&
			strings.Contains(line, `"key":"`+key+`"`) && strings.Contains(line, `"result":"ok"`) {
			n++
		}
	}
	return n
}

// TestRotationPolicy: a policy of 3 s rolls the key once per period (versions spaced
// by the period, three rolls in 3.5 periods), describe shows the next due time, a
// policy with --reencrypt starts a job that moves the files to the new version,
// --rotate-every 0 clears it, a disabled key is not rolled until enabled, and after the
// daemon was down for three periods the key is rolled exactly once at mount. Each automatic roll is audited.
func TestRotationPolicy(t *testing.T) {
	t.Setenv(minRotationEnv, "1s")
	e := newEnv(t)
	zone := e.zone("z", "k")
	const period = 3 * time.Second
	if k := e.describeKey("k"); k.Policy != nil || k.NextRotation != nil {
		t.Fatalf("a new key has a policy: %+v", k.Policy)
	}
	e.run("key", "policy", "--mount", e.mnt, "k", "--rotate-every", period.String())
	k := e.describeKey("k")
	if k.Policy == nil || k.Policy.RotateEvery != "3s" || k.Policy.Reencrypt || k.NextRotation == nil {
		t.Fatalf("policy in describe: %+v next %v", k.Policy, k.NextRotation)
	}
	v1 := k.Versions[0].Created
	if want := v1.Add(period); !k.NextRotation.Equal(want) {
		t.Errorf("next rotation %v, want the newest version's time + period %v", *k.NextRotation, want)
	}
	text := e.run("key", "describe", "--mount", e.mnt, "k")
	if !strings.Contains(text, "rotate every 3s") || !strings.Contains(text, "next rotation") {
		t.Errorf("describe text does not show the policy:\n%s", text)
	}
	var keys []control.KeyInfo
	decodeJSON(t, e.run("key", "list", "--json", "--mount", e.mnt), &keys)
	if len(keys) != 1 || keys[0].Policy == nil || keys[0].Policy.Seconds != 3 {
		t.Errorf("key list --json policy: %+v", keys)
	}
	failsCode(t, nil, control.CodeUsage, "below the minimum of 1s", "key", "policy", "--mount", e.mnt, "k", "--rotate-every", "500ms")
	failsCode(t, nil, control.CodeUsage, "needs --rotate-every", "key", "policy", "--mount", e.mnt, "k")
	failsCode(t, nil, control.CodeNotFound, "does not exist", "key", "policy", "--mount", e.mnt, "nope", "--rotate-every", "3s")
	sums := fill(t, zone, 50) // while the key rolls

	// 3.5 periods after v1: rolls at 3, 6 and 9 s, each a period after the one before.
	time.Sleep(time.Until(v1.Add(period * 7 / 2)))
	k = e.describeKey("k")
	if len(k.Versions) != 4 {
		t.Fatalf("%d versions 3.5 periods after v1, want 4 (one roll per period)", len(k.Versions))
	}
	for i := 1; i < len(k.Versions); i++ {
		gap := k.Versions[i].Created.Sub(k.Versions[i-1].Created)
		if gap < period || gap > period+900*time.Millisecond {
			t.Errorf("@%d made %v after @%d, want one period (%v)", i+1, gap, i, period)
		}
	}
	if n := e.autoRolls("k"); n != 3 {
		t.Errorf("%d automatic rolls audited, want 3", n)
	}
	if !strings.Contains(e.daemonLog(), "rolled to @4 by its policy") {
		t.Errorf("the daemon log does not show the roll:\n%s", e.daemonLog())
	}

	e.sub("reencrypt", func(t *testing.T) {
		e.run("key", "policy", "--mount", e.mnt, "k", "--rotate-every", period.String(), "--reencrypt")
		before := len(e.describeKey("k").Versions)
		deadline := time.Now().Add(2 * period)
		for len(e.describeKey("k").Versions) == before && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		e.run("key", "policy", "--mount", e.mnt, "k", "--rotate-every", "0")
		j := e.waitJob(zone)
		if j.State != "Completed" || j.Target <= uint32(before) || j.Reencrypted != int64(len(sums)) {
			t.Fatalf("job after the scheduled roll: %+v (versions before %d)", j, before)
		}
		e.checkZone(zone, sums, j.Target)
	})

	e.sub("clear", func(t *testing.T) {
		k := e.describeKey("k")
		if k.Policy != nil || k.NextRotation != nil || !strings.Contains(e.run("key", "describe", "--mount", e.mnt, "k"), "no rotation policy") {
			t.Fatalf("cleared policy still shown: %+v", k.Policy)
		}
		time.Sleep(period + time.Second)
		if n := len(e.describeKey("k").Versions); n != len(k.Versions) {
			t.Errorf("rolled after the policy was cleared: %d versions, had %d", n, len(k.Versions))
		}
	})

	e.sub("disabled", func(t *testing.T) {
		// A disabled key wraps nothing: its policy waits, and resumes at enable.
		const short = 2 * time.Second
		e.run("key", "disable", "--mount", e.mnt, "k")
		e.run("key", "policy", "--mount", e.mnt, "k", "--rotate-every", short.String())
		before := len(e.describeKey("k").Versions)
		time.Sleep(2*short + 500*time.Millisecond)
		k := e.describeKey("k")
		if len(k.Versions) != before || k.NextRotation != nil {
			t.Errorf("disabled key: %d versions (had %d), next rotation %v; want no roll, none due", len(k.Versions), before, k.NextRotation)
		}
		e.run("key", "enable", "--mount", e.mnt, "k")
		deadline := time.Now().Add(short)
		for len(e.describeKey("k").Versions) == before && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		e.run("key", "policy", "--mount", e.mnt, "k", "--rotate-every", "0")
		if n := len(e.describeKey("k").Versions); n != before+1 {
			t.Errorf("%d versions after enable, want one roll (%d)", n, before+1)
		}
	})

	e.sub("downtime", func(t *testing.T) {
		const short = 2 * time.Second
		// The newest version is older than a period: due at once, rolled once.
		e.run("key", "policy", "--mount", e.mnt, "k", "--rotate-every", short.String())
		time.Sleep(time.Second)
		e.umount()
		audited := e.autoRolls("k")
		time.Sleep(3*short + 500*time.Millisecond)
		e.mount()
		time.Sleep(time.Second) // less than a period after the roll at mount
		k := e.describeKey("k")
		down := k.Versions[len(k.Versions)-2].Created
		if n := e.autoRolls("k"); n != audited+1 {
			t.Errorf("%d rolls at mount after three missed periods, want 1", n-audited)
		}
		if gap := k.Versions[len(k.Versions)-1].Created.Sub(down); gap < 3*short {
			t.Errorf("the newest version is %v after the one before the downtime, want over three periods", gap)
		}
		if k.NextRotation == nil || !k.NextRotation.Equal(k.Versions[len(k.Versions)-1].Created.Add(short)) {
			t.Errorf("next rotation after the roll at mount: %v", k.NextRotation)
		}
		e.run("key", "policy", "--mount", e.mnt, "k", "--rotate-every", "0")
		e.checkZone(zone, sums, 1)
	})
}
