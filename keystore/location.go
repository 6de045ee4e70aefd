package keystore

import (
	"fmt"
	"net"
	"path"
	"strings"
)

// A keystore's location is a folder (the bbolt file inside it) or an etcd prefix,
// etcd://HOST:PORT[,HOST:PORT...]/PREFIX. The etcd form carries no credentials: the
// TLS files and the user and password file come from the environment (etcdconfig.go).

const etcdScheme = "etcd://"

// IsEtcd reports whether location names an etcd keystore.
func IsEtcd(location string) bool { return strings.HasPrefix(location, etcdScheme) }

// Folder is the keystore folder of location, "" for an etcd keystore (it has no
// folder on this host): what a mount hides and what fsck leaves alone.
func Folder(location string) string {
	if IsEtcd(location) {
		return ""
	}
	return location
}

// etcdLocation is a parsed etcd keystore location.
type etcdLocation struct {
	endpoints []string // HOST:PORT
	// root is the prefix of every key, "/PREFIX/": bucket/key follow it.
	root string
}

// String is the location as the user writes it.
func (l etcdLocation) String() string {
	return etcdScheme + strings.Join(l.endpoints, ",") + strings.TrimSuffix(l.root, "/")
}

// parseEtcd parses etcd://HOST:PORT[,HOST:PORT...]/PREFIX. It refuses credentials in
// it (user:password@, query parameters: a command line is no place for them), and a
// prefix one of whose names is a bucket's (its keys would mix with another
// keystore's whose prefix is its parent).
func parseEtcd(location string) (etcdLocation, error) {
	bad := func(why string) (etcdLocation, error) {
		return etcdLocation{}, fmt.Errorf("keystore location %q: %s (want etcd://HOST:PORT[,HOST:PORT...]/PREFIX): %w", location, why, ErrBadInput)
	}
	rest, _ := strings.CutPrefix(location, etcdScheme)
	hosts, prefix, ok := strings.Cut(rest, "/")
	switch {
	case !ok || strings.Trim(prefix, "/") == "":
		return bad("no prefix")
	case strings.ContainsAny(rest, "@?#"):
		return bad("credentials and options come from the environment (EZFS_ETCD_*), not the location")
	}
	var l etcdLocation
	for _, h := range strings.Split(hosts, ",") {
		host, port, err := net.SplitHostPort(h)
		if err != nil || host == "" || port == "" {
			return bad(fmt.Sprintf("endpoint %q is not HOST:PORT", h))
		}
		l.endpoints = append(l.endpoints, h)
	}
	clean := path.Clean("/" + prefix)
	if clean != "/"+strings.Trim(prefix, "/") || strings.ContainsRune(clean, 0) {
		return bad("the prefix must be a clean path")
	}
	for _, name := range strings.Split(clean[1:], "/") {
		if isBucket(name) || name == etcdGuard || name == etcdOwners {
			return bad(fmt.Sprintf("the prefix may not have a name %q (a keystore's own)", name))
		}
	}
	l.root = clean + "/"
	return l, nil
}

func isBucket(name string) bool {
	for _, b := range buckets {
		if string(b) == name {
			return true
		}
	}
	return false
}
