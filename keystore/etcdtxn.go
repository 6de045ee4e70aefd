package keystore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcdTxn reads every record at revision rev and buffers its writes until commit.
type etcdTxn struct {
	b        *etcdBackend
	ctx      context.Context
	rev      int64 // the revision every read is at
	guardMod int64 // the guard's ModRevision at rev (0: none yet)
	write    bool
	claim    *etcdClaim // the commit requires it to hold; nil: none
	// writes are the buffered changes by etcd key: a value, or nil for a delete.
	writes map[string][]byte
}

var errReadOnly = errors.New("keystore: a write in a read-only transaction")

func (t *etcdTxn) Get(bucket, key []byte) ([]byte, error) {
	k := t.b.key(bucket, key)
	if v, ok := t.writes[k]; ok {
		return v, nil
	}
	resp, err := t.b.cli.Get(t.ctx, k, clientv3.WithRev(t.rev))
	if err != nil {
		return nil, t.b.classify(err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return nonNil(resp.Kvs[0].Value), nil
}

func (t *etcdTxn) Put(bucket, key, val []byte) error {
	return t.buffer(t.b.key(bucket, key), nonNil(bytes.Clone(val)))
}

func (t *etcdTxn) Delete(bucket, key []byte) error {
	return t.buffer(t.b.key(bucket, key), nil)
}

func (t *etcdTxn) buffer(k string, v []byte) error {
	if !t.write {
		return errReadOnly
	}
	if t.writes == nil {
		t.writes = map[string][]byte{}
	}
	t.writes[k] = v
	return nil
}

// nonNil is v, or an empty value for nil (etcd returns an empty value as nil; nil
// here means no record).
func nonNil(v []byte) []byte {
	if v == nil {
		return []byte{}
	}
	return v
}

// ForEach reads the records of bucket under prefix at rev, with the transaction's own
// writes over them, in key order.
func (t *etcdTxn) ForEach(bucket, prefix []byte, fn func(k, v []byte) error) error {
	start := t.b.key(bucket, prefix)
	resp, err := t.b.cli.Get(t.ctx, start, clientv3.WithPrefix(), clientv3.WithRev(t.rev))
	if err != nil {
		return t.b.classify(err)
	}
	recs := map[string][]byte{}
	for _, kv := range resp.Kvs {
		recs[string(kv.Key)] = nonNil(kv.Value)
	}
	for k, v := range t.writes {
		if strings.HasPrefix(k, start) {
			recs[k] = v
		}
	}
	keys := make([]string, 0, len(recs))
	for k, v := range recs {
		if v != nil {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	base := len(t.b.key(bucket, nil))
	for _, k := range keys {
		if err := fn([]byte(k[base:]), recs[k]); err != nil {
			return err
		}
	}
	return nil
}

// commit writes the buffered changes in one etcd transaction guarded by the guard
// key's ModRevision; done is false when another writer committed first.
func (t *etcdTxn) commit() (done bool, err error) {
	if len(t.writes) == 0 {
		return true, nil
	}
	if len(t.writes) > etcdMaxOps {
		return true, fmt.Errorf("keystore %s: one change of %d records is more than etcd takes (%d): %w", t.b.name, len(t.writes), etcdMaxOps, ErrBadInput)
	}
	ops := make([]clientv3.Op, 0, len(t.writes)+1)
	for k, v := range t.writes {
		if v == nil {
			ops = append(ops, clientv3.OpDelete(k))
		} else {
			ops = append(ops, clientv3.OpPut(k, string(v)))
		}
	}
	ops = append(ops, clientv3.OpPut(t.b.guard(), ""))
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(t.b.guard()), "=", t.guardMod)}
	if t.claim != nil {
		cmps = append(cmps, t.claim.compare())
	}
	resp, err := t.b.cli.Txn(t.ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return true, t.b.classify(err)
	}
	return resp.Succeeded, nil
}
