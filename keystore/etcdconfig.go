package keystore

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// The environment of an etcd keystore's client: paths of files and a user name, never
// a secret itself (a password is read from its file). TLS is on when a CA or a client
// certificate is given.
const (
	EnvEtcdCA           = "EZFS_ETCD_CA"            // PEM file of the CAs that sign the servers' certificates
	EnvEtcdCert         = "EZFS_ETCD_CERT"          // PEM client certificate (with EZFS_ETCD_KEY)
	EnvEtcdKey          = "EZFS_ETCD_KEY"           // PEM private key of the client certificate
	EnvEtcdUser         = "EZFS_ETCD_USER"          // etcd user (with EZFS_ETCD_PASSWORD_FILE)
	EnvEtcdPasswordFile = "EZFS_ETCD_PASSWORD_FILE" // file holding the user's password
)

// PathVars are the variables of this package that name files or folders (the etcd
// client's credentials, the log folder): a daemon started in another working
// directory gets them as absolute paths.
var PathVars = []string{EnvEtcdCA, EnvEtcdCert, EnvEtcdKey, EnvEtcdPasswordFile, EnvLogDir}

// etcdTimeout bounds every request to etcd: past it the keystore is unavailable.
const etcdTimeout = 3 * time.Second

// etcdConfig is the client configuration of location l from the environment.
func etcdConfig(l etcdLocation) (clientv3.Config, error) {
	cfg := clientv3.Config{
		Endpoints:            l.endpoints,
		DialTimeout:          etcdTimeout,
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: etcdTimeout,
		Logger:               zap.NewNop(), // errors reach the caller; nothing on stderr
	}
	var err error
	if cfg.TLS, err = etcdTLS(); err != nil {
		return cfg, err
	}
	user, pwFile := os.Getenv(EnvEtcdUser), os.Getenv(EnvEtcdPasswordFile)
	if (user == "") != (pwFile == "") {
		return cfg, fmt.Errorf("etcd keystore: set both %s and %s, or neither: %w", EnvEtcdUser, EnvEtcdPasswordFile, ErrBadInput)
	}
	if user != "" {
		pw, err := os.ReadFile(pwFile)
		if err != nil {
			return cfg, fmt.Errorf("etcd keystore password (%s): %w", EnvEtcdPasswordFile, err)
		}
		cfg.Username, cfg.Password = user, strings.TrimRight(string(pw), "\r\n")
		if cfg.Password == "" {
			return cfg, fmt.Errorf("etcd keystore password file %s is empty: %w", pwFile, ErrPermission)
		}
	}
	return cfg, nil
}

// etcdTLS is the client's TLS configuration, nil when no CA nor certificate is given.
func etcdTLS() (*tls.Config, error) {
	ca, cert, key := os.Getenv(EnvEtcdCA), os.Getenv(EnvEtcdCert), os.Getenv(EnvEtcdKey)
	if ca == "" && cert == "" && key == "" {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if (cert == "") != (key == "") {
		return nil, fmt.Errorf("etcd keystore: set both %s and %s, or neither: %w", EnvEtcdCert, EnvEtcdKey, ErrBadInput)
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("etcd keystore client certificate (%s, %s): %w", EnvEtcdCert, EnvEtcdKey, err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("etcd keystore CA (%s): %w", EnvEtcdCA, err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd keystore CA file %s holds no PEM certificate: %w", ca, ErrBadInput)
		}
	}
	return c, nil
}
