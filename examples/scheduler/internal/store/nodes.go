package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// NodeStatus is one agent as the leader last saw it.
type NodeStatus struct {
	Name       string    `json:"name"`
	Address    string    `json:"address"`
	Healthy    bool      `json:"healthy"`
	Registered bool      `json:"registered"`
	LastSeen   time.Time `json:"last_seen,omitzero"`
	NanoCPUs   int64     `json:"nano_cpus,omitempty"`
	Memory     int64     `json:"memory_bytes,omitempty"`
	LastError  string    `json:"last_error,omitempty"`
}

// WriteNodes stores the node table if guard holds, and drops nodes not in it.
func (s *Store) WriteNodes(ctx context.Context, guard clientv3.Cmp, nodes []NodeStatus) error {
	keep := map[string]bool{}
	ops := []clientv3.Op{}
	for _, n := range nodes {
		val, err := json.Marshal(n)
		if err != nil {
			return err
		}
		keep[s.nodeKey(n.Name)] = true
		ops = append(ops, clientv3.OpPut(s.nodeKey(n.Name), string(val)))
	}
	old, err := s.c.Get(ctx, s.prefix+"/nodes/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return err
	}
	for _, kv := range old.Kvs {
		if !keep[string(kv.Key)] {
			ops = append(ops, clientv3.OpDelete(string(kv.Key)))
		}
	}
	txn, err := s.c.Txn(ctx).If(guard).Then(ops...).Commit()
	if err != nil {
		return err
	}
	if !txn.Succeeded {
		return ErrNotLeader
	}
	return nil
}

// Nodes is the node table the leader last wrote.
func (s *Store) Nodes(ctx context.Context) ([]NodeStatus, error) {
	got, err := s.c.Get(ctx, s.prefix+"/nodes/", clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := make([]NodeStatus, 0, len(got.Kvs))
	for _, kv := range got.Kvs {
		var n NodeStatus
		if err := json.Unmarshal(kv.Value, &n); err != nil {
			return nil, fmt.Errorf("%s: %w", kv.Key, err)
		}
		out = append(out, n)
	}
	return out, nil
}
