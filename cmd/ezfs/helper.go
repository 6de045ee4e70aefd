package main

import (
	"path/filepath"
	"strings"

	"github.com/ezfs/ezfs/daemon"
)

// helperNames are the names mount(8) runs ezfs by: util-linux runs
// /sbin/mount.TYPE for `mount -t TYPE` and for fstab entries of that type, and the
// type of an ezfs mount is fuse.ezfs (`make install` links mount.fuse.ezfs to ezfs).
var helperNames = []string{"mount.fuse.ezfs", "mount.ezfs"}

func isHelper(argv0 string) bool {
	base := filepath.Base(argv0)
	for _, n := range helperNames {
		if base == n {
			return true
		}
	}
	return false
}

// helperFlags are the -o words that are flags of `ezfs mount`. Secrets come only from
// files or credentials: the option string is in /proc/mounts' neighbours, fstab, the
// journal and ps.
var helperFlags = map[string]string{
	"passphrase_file": "--passphrase-file",
	"pin_file":        "--pin-file",
	"keystore":        "--keystore",
	"key_ttl":         "--key-ttl",
	"kms_poll":        "--kms-poll",
	"metrics":         "--metrics",
	"log_format":      "--log-format",
}

var helperSecrets = []string{"passphrase", "pin", "vault_token", "password"}

// mountOwn are mount(8)'s and fstab's own options: they tell mount(8) and systemd what to
// do, not the file system, and are dropped here (never refused).
var mountOwn = []string{"defaults", "auto", "noauto", "nofail", "_netdev", "user", "nouser", "users", "owner", "group", "nousers", "noowner", "nogroup", "loop", "comment", "x-", "X-"}

func isMountOwn(w string) bool {
	name, _, _ := strings.Cut(w, "=")
	for _, o := range mountOwn {
		if name == o || (strings.HasSuffix(o, "-") && strings.HasPrefix(name, o)) {
			return true
		}
	}
	return false
}

// helperArgs turns a mount helper's command line, `BACKING MOUNTPOINT [-sfnv] [-o
// OPTIONS] [-t TYPE]`, into `ezfs mount` arguments. fake is set for -f (mount(8)'s
// --fake): check, do nothing.
func helperArgs(args []string) (out []string, fake bool, err error) {
	var pos, opts []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-o" || a == "-t":
			if i+1 >= len(args) {
				return nil, false, daemon.UsageError("mount.fuse.ezfs: %s needs a value", a)
			}
			if a == "-o" {
				opts = append(opts, strings.Split(args[i+1], ",")...)
			}
			i++
		case strings.HasPrefix(a, "-o"):
			opts = append(opts, strings.Split(a[2:], ",")...)
		case strings.HasPrefix(a, "-t"):
		case strings.HasPrefix(a, "-") && len(a) > 1:
			// -s (sloppy), -n (no mtab), -v (verbose), -f (fake), -r, -w.
			for _, c := range a[1:] {
				switch c {
				case 'f':
					fake = true
				case 'r':
					opts = append(opts, "ro")
				case 's', 'n', 'v', 'w':
				default:
					return nil, false, daemon.UsageError("mount.fuse.ezfs: unknown flag -%c", c)
				}
			}
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) != 2 {
		return nil, false, daemon.UsageError("usage: mount.fuse.ezfs BACKING MOUNTPOINT [-o OPTIONS]")
	}
	out = []string{"mount"}
	var fsOpts []string
	for _, w := range joinEndpoints(opts) {
		w = strings.TrimSpace(w)
		name, val, hasVal := strings.Cut(w, "=")
		switch {
		case w == "":
		case helperFlags[name] != "":
			if !hasVal || val == "" {
				return nil, false, daemon.UsageError("mount option %s needs a value (%s=...)", name, name)
			}
			out = append(out, helperFlags[name], val)
		case isSecret(name):
			return nil, false, daemon.UsageError("mount option %s: secrets are never taken from the option string; use %s_file=PATH or a systemd credential", name, name)
		case isMountOwn(w):
		default:
			fsOpts = append(fsOpts, w)
		}
	}
	if len(fsOpts) > 0 {
		out = append(out, "-o", strings.Join(fsOpts, ","))
	}
	return append(out, "--", pos[0], pos[1]), fake, nil
}

// joinEndpoints puts back together keystore=etcd://HOST:PORT,HOST:PORT/PREFIX, which
// the option string's commas split: the words after one whose location has no prefix
// yet (no "/" after the hosts) are its further endpoints, up to the one with the
// prefix.
func joinEndpoints(opts []string) []string {
	var out []string
	more := false
	for _, w := range opts {
		if more && !strings.Contains(w, "=") {
			out[len(out)-1] += "," + strings.TrimSpace(w)
		} else {
			out = append(out, w)
		}
		loc, ok := strings.CutPrefix(strings.TrimSpace(out[len(out)-1]), "keystore=etcd://")
		more = ok && !strings.Contains(loc, "/")
	}
	return out
}

func isSecret(name string) bool {
	for _, s := range helperSecrets {
		if name == s {
			return true
		}
	}
	return false
}
