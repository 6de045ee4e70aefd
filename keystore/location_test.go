package keystore

import (
	"errors"
	"testing"
)

func TestParseEtcdLocation(t *testing.T) {
	for _, tc := range []struct {
		loc, root string
		eps       int
	}{
		{"etcd://127.0.0.1:2379/ezfs", "/ezfs/", 1},
		{"etcd://a:1,b:2,c:3/ezfs/prod/", "/ezfs/prod/", 3},
		{"etcd://[::1]:2379/x", "/x/", 1},
		{"etcd://127.0.0.1:2379", "", 0},
		{"etcd://127.0.0.1:2379/", "", 0},
		{"etcd://127.0.0.1/ezfs", "", 0},
		{"etcd://user:pw@127.0.0.1:2379/ezfs", "", 0},
		{"etcd://127.0.0.1:2379/ezfs?password=x", "", 0},
		{"etcd://127.0.0.1:2379/a/../b", "", 0},
		{"etcd://127.0.0.1:2379/ezfs//x", "", 0},
		{"etcd://127.0.0.1:2379/ezfs/zones", "", 0},
		{"etcd://127.0.0.1:2379/rev", "", 0},
		{"etcd://a:1,,b:2/ezfs", "", 0},
	} {
		l, err := parseEtcd(tc.loc)
		if tc.root == "" {
			if !errors.Is(err, ErrBadInput) {
				t.Errorf("%s: %v %+v, want ErrBadInput", tc.loc, err, l)
			}
			continue
		}
		if err != nil || l.root != tc.root || len(l.endpoints) != tc.eps {
			t.Errorf("%s: %+v %v", tc.loc, l, err)
		}
	}
}
