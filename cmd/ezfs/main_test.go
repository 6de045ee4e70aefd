package main

import (
	"slices"
	"testing"
)

func TestReorder(t *testing.T) {
	cmds := newApp().Commands
	for _, c := range []struct{ in, want []string }{
		{[]string{"zone", "create", "/m/z", "--key", "k"}, []string{"zone", "create", "--key", "k", "--", "/m/z"}},
		{[]string{"zone", "create", "--key=k", "/m/z", "--json"}, []string{"zone", "create", "--key=k", "--json", "--", "/m/z"}},
		{[]string{"mount", "b", "m", "-o", "allow_other", "--foreground"}, []string{"mount", "-o", "allow_other", "--foreground", "--", "b", "m"}},
		{[]string{"key", "list"}, []string{"key", "list"}},
		{[]string{"--help"}, []string{"--help"}},
	} {
		if got := reorder(cmds, c.in); !slices.Equal(got, c.want) {
			t.Errorf("reorder(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestHelperArgs(t *testing.T) {
	for _, c := range []struct {
		in   []string
		want []string
		fake bool
	}{
		{[]string{"/b", "/m", "-o", "rw,allow_other,passphrase_file=/etc/ezfs/p"},
			[]string{"mount", "--passphrase-file", "/etc/ezfs/p", "-o", "rw,allow_other", "--", "/b", "/m"}, false},
		{[]string{"/b", "/m", "-n", "-o", "defaults,noauto,nofail,_netdev,x-systemd.requires=vault.service,x-systemd.automount,comment=x,ro", "-t", "fuse.ezfs"},
			[]string{"mount", "-o", "ro", "--", "/b", "/m"}, false},
		{[]string{"/b", "/m", "-o", "_netdev,sharedstorage,keystore=/k"},
			[]string{"mount", "--keystore", "/k", "-o", "sharedstorage", "--", "/b", "/m"}, false},
		{[]string{"/b", "/m", "-o", "keystore=etcd://h1:2379,h2:2379,h3:2379/ezfs/a,sharedstorage"},
			[]string{"mount", "--keystore", "etcd://h1:2379,h2:2379,h3:2379/ezfs/a", "-o", "sharedstorage", "--", "/b", "/m"}, false},
		{[]string{"/b", "/m", "-o", "sharedstorage,keystore=etcd://h1:2379/ezfs"},
			[]string{"mount", "--keystore", "etcd://h1:2379/ezfs", "-o", "sharedstorage", "--", "/b", "/m"}, false},
		{[]string{"/b", "/m", "-sfv", "-o", "pin_file=/p,keystore=/k,key_ttl=1m"},
			[]string{"mount", "--pin-file", "/p", "--keystore", "/k", "--key-ttl", "1m", "--", "/b", "/m"}, true},
	} {
		got, fake, err := helperArgs(c.in)
		if err != nil || !slices.Equal(got, c.want) || fake != c.fake {
			t.Errorf("helperArgs(%q) = %q %v %v, want %q %v", c.in, got, fake, err, c.want, c.fake)
		}
	}
	for _, in := range [][]string{
		{"/b", "/m", "-o", "passphrase=secret"},
		{"/b", "/m", "-o", "pin=1234"},
		{"/b"},
		{"/b", "/m", "-o", "passphrase_file"},
		{"/b", "/m", "-q"},
	} {
		if _, _, err := helperArgs(in); err == nil {
			t.Errorf("helperArgs(%q): no error", in)
		}
	}
	if !isHelper("/sbin/mount.fuse.ezfs") || isHelper("/usr/bin/ezfs") {
		t.Error("isHelper")
	}
}
