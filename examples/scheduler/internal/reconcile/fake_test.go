package reconcile

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	schedulerv1 "github.com/shakedown-dev/shakedown/go/gen/scheduler/v1"

	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/agents"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/labels"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/plan"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/store"
)

// fakeAgent is one node in memory: containers keyed by id, carrying the
// labels the real agent would return.
type fakeAgent struct {
	mu         sync.Mutex
	name       string
	down       bool  // every call fails as if unreachable
	createErr  error // Create fails with this
	containers map[string]*fakeContainer
	next       int
	calls      []string
	events     chan struct{}
}

type fakeContainer struct {
	labels map[string]string
	state  plan.State
	exit   int
	spec   agents.CreateRequest
}

// clientv3Guard stands for the leader's comparison, which the fake ignores.
var clientv3Guard = clientv3.Compare(clientv3.Value("leader"), "=", "me")

var errDown = errors.New("unavailable: connection refused")

func newFakeAgent(name string) *fakeAgent {
	return &fakeAgent{name: name, containers: map[string]*fakeContainer{}, events: make(chan struct{}, 16)}
}

func (f *fakeAgent) call(s string) error {
	f.calls = append(f.calls, s)
	if f.down {
		return errDown
	}
	return nil
}

func (f *fakeAgent) Info(context.Context) (agents.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return agents.Info{NanoCPUs: 2e9, Memory: 4 << 30}, f.call("info")
}

func (f *fakeAgent) Containers(context.Context) ([]plan.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("list"); err != nil {
		return nil, err
	}
	var out []plan.Container
	for _, id := range slices.Sorted(maps.Keys(f.containers)) {
		c := f.containers[id]
		l, err := labels.Parse(c.labels)
		if err != nil {
			continue
		}
		out = append(out, plan.Container{ID: id, Node: f.name, WorkloadID: l.WorkloadID, Index: l.Index,
			Generation: l.Generation, State: c.state, ExitCode: c.exit})
	}
	return out, nil
}

func (f *fakeAgent) Create(_ context.Context, r agents.CreateRequest) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("create"); err != nil {
		return "", err
	}
	if f.createErr != nil {
		return "", f.createErr
	}
	f.next++
	id := fmt.Sprintf("%s-c%d", f.name, f.next)
	f.containers[id] = &fakeContainer{labels: agents.ContainerSpec(r).GetLabels(), state: plan.StateRunning, spec: r}
	return id, nil
}

func (f *fakeAgent) Start(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("start " + id); err != nil {
		return err
	}
	c, ok := f.containers[id]
	if !ok {
		return errors.New("not found")
	}
	c.state, c.exit = plan.StateRunning, 0
	return nil
}

func (f *fakeAgent) Remove(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("remove " + id); err != nil {
		return err
	}
	delete(f.containers, id)
	return nil
}

func (f *fakeAgent) Events(ctx context.Context, fn func()) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-f.events:
			fn()
		}
	}
}

func (f *fakeAgent) Close() error { return nil }

// exit makes a container exit, as a kill or a crash would.
func (f *fakeAgent) exit(id string, code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.containers[id].state, f.containers[id].exit = plan.StateExited, code
}

func (f *fakeAgent) ids() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.containers))
}

func (f *fakeAgent) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

// fakeState is the store in memory.
type fakeState struct {
	mu        sync.Mutex
	records   []store.Record
	status    map[string][]plan.Replica
	nodes     []store.NodeStatus
	notLeader bool
	puts      int // PutRecord calls (planted bug blind-write)
}

func (s *fakeState) add(name string, replicas int32, policy schedulerv1.RestartPolicy) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := fmt.Sprintf("w%d", len(s.records)+1)
	s.records = append(s.records, store.Record{ID: id, Generation: 1, Template: 1, Spec: &schedulerv1.WorkloadSpec{
		Name: name, Image: "busybox", Replicas: replicas, RestartPolicy: policy}})
	return id
}

func (s *fakeState) List(context.Context) ([]store.Record, map[string][]plan.Replica, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := map[string][]plan.Replica{}
	for k, v := range s.status {
		st[k] = slices.Clone(v)
	}
	return slices.Clone(s.records), st, 1, nil
}

func (s *fakeState) WriteStatus(_ context.Context, _ clientv3.Cmp, id string, reps []plan.Replica) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.notLeader {
		return store.ErrNotLeader
	}
	if s.status == nil {
		s.status = map[string][]plan.Replica{}
	}
	s.status[id] = slices.Clone(reps)
	return nil
}

func (s *fakeState) WriteNodes(_ context.Context, _ clientv3.Cmp, nodes []store.NodeStatus) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.notLeader {
		return store.ErrNotLeader
	}
	s.nodes = nodes
	return nil
}

func (s *fakeState) Nodes(context.Context) ([]store.NodeStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.nodes), nil
}

func (s *fakeState) replicas(id string) []plan.Replica {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.status[id])
}

// cluster is fake agents by name, and a dialer for them.
type cluster map[string]*fakeAgent

func (c cluster) dial(_ context.Context, name, _ string) (agents.Agent, error) {
	a, ok := c[name]
	if !ok {
		return nil, errors.New("no such agent")
	}
	if a.down {
		return nil, errDown
	}
	return a, nil
}

func (c cluster) registered() map[string]string {
	out := map[string]string{}
	for name := range c {
		out[name] = name + ":7443"
	}
	return out
}

// clock is a settable time for the reconciler.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (s *fakeState) PutRecord(_ context.Context, rec store.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.puts++
	for i := range s.records {
		if s.records[i].ID == rec.ID {
			s.records[i] = rec
			return nil
		}
	}
	s.records = append(s.records, rec)
	return nil
}
