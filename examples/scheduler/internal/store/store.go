// Package store keeps the scheduler's state in etcd. Desired state (workload
// specs) is written by any replica with transactions that compare the
// revision they read, so two writers never lose an update; observed state
// (replica status, node health) is written by the leader only, each write
// guarded by a comparison that it still leads.
//
// Layout under the prefix (default /shakedown-scheduler):
//
//	workloads/<id>   Record (JSON; the spec as protojson)
//	names/<name>     <id>: names are unique
//	status/<id>      []plan.Replica (JSON)
//	nodes/<name>     NodeStatus (JSON)
//	election/        the leader election (concurrency.Election)
package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/plan"
	schedulerv1 "github.com/shakedown-dev/shakedown/go/gen/scheduler/v1"
)

// DefaultPrefix is where the state lives unless told otherwise.
const DefaultPrefix = "/shakedown-scheduler"

// Attempts bounds the optimistic retries of one write under contention.
const Attempts = 16

var (
	ErrNotFound = errors.New("workload not found")
	// ErrConflict: the write lost Attempts races in a row; the caller may retry.
	ErrConflict = errors.New("concurrent updates; try again")
	// ErrNotLeader: a guarded write found this replica no longer leads.
	ErrNotLeader = errors.New("no longer the leader")
)

// Record is one stored workload.
type Record struct {
	ID         string
	Generation int64
	// Template is the generation at which the container template last
	// changed (see plan.Workload.Template).
	Template  int64
	Spec      *schedulerv1.WorkloadSpec
	CreatedAt time.Time
	UpdatedAt time.Time
	// ModRevision is the etcd revision of its last write.
	ModRevision int64
}

type recordJSON struct {
	ID         string          `json:"id"`
	Generation int64           `json:"generation"`
	Template   int64           `json:"template_generation"`
	Spec       json.RawMessage `json:"spec"`
	CreatedAt  time.Time       `json:"created_at"`
	UpdatedAt  time.Time       `json:"updated_at"`
}

// Store is the state in one etcd, under one prefix.
type Store struct {
	c      *clientv3.Client
	prefix string
	now    func() time.Time
}

// New uses client c under prefix (DefaultPrefix when empty).
func New(c *clientv3.Client, prefix string) *Store {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Store{c: c, prefix: strings.TrimRight(prefix, "/"), now: time.Now}
}

func (s *Store) workloadKey(id string) string { return s.prefix + "/workloads/" + id }
func (s *Store) nameKey(name string) string   { return s.prefix + "/names/" + name }
func (s *Store) statusKey(id string) string   { return s.prefix + "/status/" + id }
func (s *Store) nodeKey(name string) string   { return s.prefix + "/nodes/" + name }

// ElectionPrefix is the key prefix of the leader election.
func (s *Store) ElectionPrefix() string { return s.prefix + "/election" }

// Prefix is the root of all of the scheduler's keys, with a trailing "/".
func (s *Store) Prefix() string { return s.prefix + "/" }

// WorkloadsPrefix and StatusPrefix are watched by WatchWorkloads.
func (s *Store) WorkloadsPrefix() string { return s.prefix + "/workloads/" }
func (s *Store) StatusPrefix() string    { return s.prefix + "/status/" }

// IDFromKey is the workload id of a workloads/ or status/ key ("" otherwise).
func (s *Store) IDFromKey(key string) string {
	for _, p := range []string{s.WorkloadsPrefix(), s.StatusPrefix()} {
		if strings.HasPrefix(key, p) {
			return key[len(p):]
		}
	}
	return ""
}

// Apply creates the workload named spec.Name, or updates it to spec. The same
// spec again changes nothing and keeps the generation.
func (s *Store) Apply(ctx context.Context, spec *schedulerv1.WorkloadSpec) (rec Record, created bool, err error) {
	if err := Validate(spec); err != nil {
		return rec, false, err
	}
	raw, err := protojson.Marshal(spec)
	if err != nil {
		return rec, false, err
	}
	nk := s.nameKey(spec.GetName())
	for range Attempts {
		got, err := s.c.Get(ctx, nk)
		if err != nil {
			return rec, false, err
		}
		now := s.now().UTC()
		if len(got.Kvs) == 0 {
			rec = Record{ID: newID(), Generation: 1, Template: 1, Spec: spec, CreatedAt: now, UpdatedAt: now}
			val, _ := encode(rec, raw)
			txn, err := s.c.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(nk), "=", 0)).
				Then(clientv3.OpPut(nk, rec.ID), clientv3.OpPut(s.workloadKey(rec.ID), val)).Commit()
			if err != nil {
				return rec, false, err
			}
			if txn.Succeeded {
				rec.ModRevision = txn.Header.Revision
				return rec, true, nil
			}
			continue // someone created the name first: update theirs
		}
		id, nameRev := string(got.Kvs[0].Value), got.Kvs[0].ModRevision
		old, err := s.get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue // deleted between the two reads
		} else if err != nil {
			return rec, false, err
		}
		if proto.Equal(old.Spec, spec) {
			return old, false, nil
		}
		rec = old
		rec.Spec, rec.Generation, rec.UpdatedAt = spec, old.Generation+1, now
		if !sameTemplate(old.Spec, spec) {
			rec.Template = rec.Generation
		}
		val, _ := encode(rec, raw)
		wk := s.workloadKey(id)
		txn, err := s.c.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(wk), "=", old.ModRevision),
			clientv3.Compare(clientv3.ModRevision(nk), "=", nameRev),
		).Then(clientv3.OpPut(wk, val)).Commit()
		if err != nil {
			return rec, false, err
		}
		if txn.Succeeded {
			rec.ModRevision = txn.Header.Revision
			return rec, false, nil
		}
	}
	return rec, false, ErrConflict
}

// Get is one workload and its status, by id, read in one transaction.
func (s *Store) Get(ctx context.Context, id string) (Record, []plan.Replica, error) {
	if err := checkID(id); err != nil {
		return Record{}, nil, err
	}
	txn, err := s.c.Txn(ctx).Then(clientv3.OpGet(s.workloadKey(id)), clientv3.OpGet(s.statusKey(id))).Commit()
	if err != nil {
		return Record{}, nil, err
	}
	w, st := txn.Responses[0].GetResponseRange().Kvs, txn.Responses[1].GetResponseRange().Kvs
	if len(w) == 0 {
		return Record{}, nil, fmt.Errorf("%w: id %q", ErrNotFound, id)
	}
	rec, err := decode(w[0].Value, w[0].ModRevision)
	if err != nil {
		return rec, nil, fmt.Errorf("%s: %w", w[0].Key, err)
	}
	var reps []plan.Replica
	if len(st) > 0 {
		if err := json.Unmarshal(st[0].Value, &reps); err != nil {
			return rec, nil, fmt.Errorf("%s: %w", st[0].Key, err)
		}
	}
	return rec, reps, nil
}

func checkID(id string) error {
	if id == "" || strings.ContainsAny(id, "/\x00") {
		return &FieldError{"id", fmt.Sprintf("%q is not a workload id", id)}
	}
	return nil
}

// Resolve is the id of a workload given by id or by name (exactly one).
func (s *Store) Resolve(ctx context.Context, id, name string) (string, error) {
	switch {
	case (id == "") == (name == ""):
		return "", &FieldError{"id", "give exactly one of id and name"}
	case id != "":
		return id, nil
	}
	got, err := s.c.Get(ctx, s.nameKey(name))
	if err != nil {
		return "", err
	}
	if len(got.Kvs) == 0 {
		return "", fmt.Errorf("%w: name %q", ErrNotFound, name)
	}
	return string(got.Kvs[0].Value), nil
}

func (s *Store) get(ctx context.Context, id string) (Record, error) {
	if err := checkID(id); err != nil {
		return Record{}, err
	}
	got, err := s.c.Get(ctx, s.workloadKey(id))
	if err != nil {
		return Record{}, err
	}
	if len(got.Kvs) == 0 {
		return Record{}, fmt.Errorf("%w: id %q", ErrNotFound, id)
	}
	return decode(got.Kvs[0].Value, got.Kvs[0].ModRevision)
}

// List is every workload and status, read at one revision.
func (s *Store) List(ctx context.Context) ([]Record, map[string][]plan.Replica, int64, error) {
	ws, err := s.c.Get(ctx, s.WorkloadsPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, nil, 0, err
	}
	rev := ws.Header.Revision
	st, err := s.c.Get(ctx, s.StatusPrefix(), clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		return nil, nil, 0, err
	}
	recs := make([]Record, 0, len(ws.Kvs))
	for _, kv := range ws.Kvs {
		r, err := decode(kv.Value, kv.ModRevision)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("%s: %w", kv.Key, err)
		}
		recs = append(recs, r)
	}
	status := map[string][]plan.Replica{}
	for _, kv := range st.Kvs {
		var reps []plan.Replica
		if err := json.Unmarshal(kv.Value, &reps); err != nil {
			return nil, nil, 0, fmt.Errorf("%s: %w", kv.Key, err)
		}
		status[s.IDFromKey(string(kv.Key))] = reps
	}
	return recs, status, rev, nil
}

// Delete removes a workload, its name and its status in one transaction.
func (s *Store) Delete(ctx context.Context, id string) error {
	for range Attempts {
		rec, err := s.get(ctx, id)
		if err != nil {
			return err
		}
		wk := s.workloadKey(id)
		txn, err := s.c.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(wk), "=", rec.ModRevision)).
			Then(clientv3.OpDelete(wk), clientv3.OpDelete(s.nameKey(rec.Spec.GetName())), clientv3.OpDelete(s.statusKey(id))).Commit()
		if err != nil {
			return err
		}
		if txn.Succeeded {
			return nil
		}
	}
	return ErrConflict
}

// PutRecord writes rec and its name key as they are, comparing nothing: a
// newer write is overwritten and a deleted workload restored. Only the
// planted bug blind-write (package bugs) calls it; every other spec write
// compares the revision it read.
func (s *Store) PutRecord(ctx context.Context, rec Record) error {
	raw, err := protojson.Marshal(rec.Spec)
	if err != nil {
		return err
	}
	val, err := encode(rec, raw)
	if err != nil {
		return err
	}
	_, err = s.c.Txn(ctx).Then(clientv3.OpPut(s.workloadKey(rec.ID), val),
		clientv3.OpPut(s.nameKey(rec.Spec.GetName()), rec.ID)).Commit()
	return err
}

// WriteStatus stores a workload's replica status if guard (the leader's
// comparison) holds and the workload still exists.
func (s *Store) WriteStatus(ctx context.Context, guard clientv3.Cmp, id string, reps []plan.Replica) error {
	val, err := json.Marshal(reps)
	if err != nil {
		return err
	}
	txn, err := s.c.Txn(ctx).If(guard, clientv3.Compare(clientv3.CreateRevision(s.workloadKey(id)), ">", 0)).
		Then(clientv3.OpPut(s.statusKey(id), string(val))).
		Else(clientv3.OpGet(s.workloadKey(id), clientv3.WithCountOnly())).Commit()
	if err != nil {
		return err
	}
	if !txn.Succeeded && txn.Responses[0].GetResponseRange().Count > 0 {
		return ErrNotLeader // the workload exists: the guard failed
	}
	return nil // deleted meanwhile: nothing to report on
}

// WatchDesired calls fn after every change of a spec (apply, delete), until
// ctx ends or the watch fails, so the leader acts on a write at once.
func (s *Store) WatchDesired(ctx context.Context, fn func()) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range s.c.Watch(wctx, s.WorkloadsPrefix(), clientv3.WithPrefix()) {
		if err := resp.Err(); err != nil {
			return err
		}
		fn()
	}
	return ctx.Err()
}

func encode(r Record, spec []byte) (string, error) {
	b, err := json.Marshal(recordJSON{r.ID, r.Generation, r.Template, spec, r.CreatedAt, r.UpdatedAt})
	return string(b), err
}

func decode(val []byte, modRev int64) (Record, error) {
	var j recordJSON
	if err := json.Unmarshal(val, &j); err != nil {
		return Record{}, err
	}
	spec := &schedulerv1.WorkloadSpec{}
	if err := protojson.Unmarshal(j.Spec, spec); err != nil {
		return Record{}, fmt.Errorf("spec: %w", err)
	}
	if j.Template < 1 || j.Template > j.Generation { // written before templates were tracked
		j.Template = j.Generation
	}
	return Record{ID: j.ID, Generation: j.Generation, Template: j.Template, Spec: spec, CreatedAt: j.CreatedAt,
		UpdatedAt: j.UpdatedAt, ModRevision: modRev}, nil
}

// sameTemplate: a and b make the same containers (replicas and restart
// policy are the scheduler's business, not the container's).
func sameTemplate(a, b *schedulerv1.WorkloadSpec) bool {
	x, y := proto.Clone(a).(*schedulerv1.WorkloadSpec), proto.Clone(b).(*schedulerv1.WorkloadSpec)
	x.Replicas, y.Replicas = 0, 0
	x.RestartPolicy, y.RestartPolicy = 0, 0
	return proto.Equal(x, y)
}

func newID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// PlanWorkload is the part of a record the decisions need.
func PlanWorkload(r Record) plan.Workload {
	res := r.Spec.GetResources()
	return plan.Workload{ID: r.ID, Name: r.Spec.GetName(), Generation: r.Generation, Template: r.Template,
		Replicas: int(r.Spec.GetReplicas()), Restart: r.Spec.GetRestartPolicy(),
		NanoCPUs: res.GetNanoCpus(), Memory: res.GetMemoryBytes()}
}
