package keystore

import "fmt"

// openEtcdStore opens the etcd keystore at location, or with create makes it (its
// schema record; ErrExists if it has one). Opening migrates an older schema, as
// bbolt's does.
func openEtcdStore(location string, create bool) (*Store, error) {
	l, err := parseEtcd(location)
	if err != nil {
		return nil, err
	}
	b, err := openEtcd(l)
	if err != nil {
		return nil, err
	}
	err = b.Update(func(tx txn) error {
		schema, err := tx.Get(bucketMeta, keySchema)
		switch {
		case err != nil:
			return err
		case create && schema != nil:
			return fmt.Errorf("keystore %s: %w", l, ErrExists)
		case create:
			return tx.Put(bucketMeta, keySchema, []byte(Schema))
		case schema == nil:
			return fmt.Errorf("%s (run 'ezfs init' first): %w", l, ErrNoStore)
		}
		return migrate(tx)
	})
	if err != nil {
		b.Close()
		return nil, err
	}
	return storeOn(b, l.String(), Place{Name: l.String()}), nil
}

// etcdExists reports whether the etcd keystore at location has its schema record.
func etcdExists(location string) bool {
	s, err := openEtcdStore(location, false)
	if err != nil {
		return false
	}
	s.Close()
	return true
}
