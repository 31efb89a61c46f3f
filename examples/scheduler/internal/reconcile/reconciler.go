// Package reconcile runs the leader's loop: probe the agents, read the
// desired state, decide (package plan), act on the agents, write the status.
// Agents and state are interfaces, so tests drive it with fakes.
package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	schedulerv1 "github.com/shakedown-dev/shakedown/go/gen/scheduler/v1"

	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/agents"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/bugs"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/metrics"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/plan"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/store"
)

// State is the part of the store the loop uses; writes carry the leader's guard.
type State interface {
	List(ctx context.Context) ([]store.Record, map[string][]plan.Replica, int64, error)
	WriteStatus(ctx context.Context, guard clientv3.Cmp, id string, reps []plan.Replica) error
	WriteNodes(ctx context.Context, guard clientv3.Cmp, nodes []store.NodeStatus) error
	Nodes(ctx context.Context) ([]store.NodeStatus, error)
	// PutRecord writes a workload record unconditionally: only the planted
	// bug blind-write calls it.
	PutRecord(ctx context.Context, rec store.Record) error
}

// ForgetAfter is how long an agent whose discovery record is gone stays
// listed (as unreachable) before it is forgotten, or the node timeout if longer.
const ForgetAfter = 5 * time.Minute

// Config tunes the loop.
type Config struct {
	Interval     time.Duration // a pass at least this often
	NodeTimeout  time.Duration // unreachable this long: move its replicas
	ProbeTimeout time.Duration // per agent and pass
	ActTimeout   time.Duration // per action
	Bugs         bugs.Set      // planted bugs to act out (none in production)
}

// Reconciler is the leader's loop. Discovery feeds it agents at any time;
// Run drives it while this replica leads.
type Reconciler struct {
	cfg     Config
	state   State
	nodes   *nodeTable
	metrics *metrics.Metrics
	log     *slog.Logger
	now     func() time.Time
	trigger chan struct{}
	term    zombie                  // planted bug dual-leader
	cached  map[string]store.Record // planted bug blind-write: a record per template
}

// New makes a reconciler; m may be nil.
func New(cfg Config, state State, dial Dialer, m *metrics.Metrics, log *slog.Logger) *Reconciler {
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = 5 * time.Second
	}
	if cfg.ActTimeout <= 0 {
		cfg.ActTimeout = 60 * time.Second // a create may pull an image
	}
	if m == nil {
		m = metrics.New()
	}
	r := &Reconciler{cfg: cfg, state: state, metrics: m, log: log, now: time.Now,
		nodes:   &nodeTable{nodes: map[string]*node{}, dial: dial, log: log},
		trigger: make(chan struct{}, 1), cached: map[string]store.Record{}}
	if cfg.Bugs.Has(bugs.DualLeader) {
		r.term.state = &zombieState{State: state}
		r.state = r.term.state
	}
	return r
}

// SetAgents is discovery's current answer: agent name -> host:port.
func (r *Reconciler) SetAgents(reg map[string]string) {
	r.nodes.SetRegistered(r.now(), reg)
	r.Trigger()
}

// Trigger asks for a pass soon; many triggers before it runs make one pass.
func (r *Reconciler) Trigger() {
	select {
	case r.trigger <- struct{}{}:
	default:
	}
}

// Run passes every Interval and on every trigger until ctx ends (leadership
// lost, or shutdown). It returns when a guarded write finds it no longer leads.
func (r *Reconciler) Run(ctx context.Context, guard clientv3.Cmp) error {
	defer r.nodes.Close() // connections and subscriptions belong to one term
	stored, err := r.state.Nodes(ctx)
	if err != nil {
		r.log.Warn("previous node table unreadable; judging nodes from now", "error", err)
	}
	r.nodes.Seed(r.now(), stored)
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		err := r.Pass(ctx, guard)
		switch {
		case errors.Is(err, store.ErrNotLeader):
			return err
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			r.log.Warn("reconcile pass failed", "error", err)
		}
		r.nodes.Subscribe(ctx, r.Trigger)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		case <-r.trigger:
		}
	}
}

// Pass is one reconciliation.
func (r *Reconciler) Pass(ctx context.Context, guard clientv3.Cmp) (err error) {
	start := r.now()
	defer func() {
		r.metrics.ReconcileTime.Observe(time.Since(start).Seconds())
		result := "ok"
		if err != nil {
			result = "error"
		}
		r.metrics.ReconcileLoops.WithLabelValues(result).Inc()
	}()
	seen := r.nodes.Probe(ctx, start, r.cfg.ProbeTimeout, max(r.cfg.NodeTimeout, ForgetAfter))
	recs, status, _, err := r.state.List(ctx)
	if err != nil {
		return fmt.Errorf("read desired state: %w", err)
	}
	in := plan.Input{Now: start, NodeTimeout: r.cfg.NodeTimeout, Nodes: r.nodes.Plan(start),
		Containers: seen, Status: status}
	in.Bugs = r.cfg.Bugs
	specs := map[string]store.Record{}
	for _, rec := range recs {
		in.Workloads = append(in.Workloads, store.PlanWorkload(rec))
		specs[rec.ID] = rec
	}
	r.cache(recs)
	out := plan.Decide(in)
	for _, a := range out.Actions {
		r.act(ctx, a, specs, out.Status)
	}
	r.observe(out.Status, in.Nodes)
	for id, reps := range out.Status {
		if same(status[id], reps) {
			continue
		}
		stamp(reps, status[id], start)
		if err := r.state.WriteStatus(ctx, guard, id, reps); err != nil {
			return fmt.Errorf("write status of %s: %w", id, err)
		}
		if err := r.writeBack(ctx, id); err != nil {
			return err
		}
	}
	if err := r.state.WriteNodes(ctx, guard, r.nodes.Status()); err != nil {
		return fmt.Errorf("write nodes: %w", err)
	}
	return nil
}

// act carries out one action and notes its outcome in the replica's status.
func (r *Reconciler) act(ctx context.Context, a plan.Action, specs map[string]store.Record, status map[string][]plan.Replica) {
	var rep *plan.Replica
	if reps := status[a.WorkloadID]; a.Index < len(reps) {
		rep = &reps[a.Index]
	}
	ag := r.nodes.Agent(a.Node)
	err := errors.New("node not healthy any more")
	actx, cancel := context.WithTimeout(ctx, r.cfg.ActTimeout)
	defer cancel()
	if ag != nil {
		switch a.Kind {
		case plan.Remove:
			err = ag.Remove(actx, a.ContainerID)
		case plan.Start:
			err = ag.Start(actx, a.ContainerID)
		case plan.Create:
			var id string
			id, err = ag.Create(actx, agents.CreateRequest{WorkloadID: a.WorkloadID, Index: a.Index,
				Generation: a.Generation, Spec: specs[a.WorkloadID].Spec})
			if err == nil && rep != nil {
				rep.ContainerID = id
			}
		}
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	r.metrics.Actions.WithLabelValues(a.Kind.String(), result).Inc()
	r.log.Info("action", "action", a.Kind.String(), "node", a.Node, "workload", a.WorkloadID, "replica", a.Index,
		"container", a.ContainerID, "reason", a.Reason, "error", err)
	if rep == nil || a.Kind == plan.Remove {
		return // a duplicate or orphan: the replica's own status is not about it
	}
	if err == nil {
		rep.LastError = ""
		if a.Kind == plan.Create {
			rep.Failures = 0
		}
		return
	}
	rep.LastError = fmt.Sprintf("%s on %s: %v", a.Kind, a.Node, err)
	if a.Kind == plan.Create {
		rep.Failures++
		rep.LastAttempt = r.now()
		rep.Node = "" // let the next pass place it afresh
		if agents.Permanent(err) {
			rep.Phase, rep.Reason = schedulerv1.Phase_PHASE_FAILED, "cannot create its container"
		}
	}
}

// observe sets the gauges from a pass's outcome.
func (r *Reconciler) observe(status map[string][]plan.Replica, nodes []plan.Node) {
	m := r.metrics
	m.Replicas.Reset()
	m.Workloads.Reset()
	for _, reps := range status {
		worst := schedulerv1.Phase_PHASE_SUCCEEDED
		for _, rep := range reps {
			m.Replicas.WithLabelValues(phaseName(rep.Phase)).Inc()
			worst = min(worst, rank(rep.Phase))
		}
		m.Workloads.WithLabelValues(phaseName(unrank(worst))).Inc()
	}
	m.Nodes.Reset()
	for _, n := range nodes {
		h := "unreachable"
		if n.Healthy {
			h = "healthy"
		}
		m.Nodes.WithLabelValues(h).Inc()
	}
}

// rank orders phases from least to most advanced, for a workload's summary.
func rank(p schedulerv1.Phase) schedulerv1.Phase {
	switch p {
	case schedulerv1.Phase_PHASE_FAILED:
		return 0
	case schedulerv1.Phase_PHASE_PENDING, schedulerv1.Phase_PHASE_UNSPECIFIED:
		return 1
	case schedulerv1.Phase_PHASE_RUNNING:
		return 2
	}
	return 3
}

func unrank(r schedulerv1.Phase) schedulerv1.Phase {
	return []schedulerv1.Phase{schedulerv1.Phase_PHASE_FAILED, schedulerv1.Phase_PHASE_PENDING,
		schedulerv1.Phase_PHASE_RUNNING, schedulerv1.Phase_PHASE_SUCCEEDED}[r]
}

func phaseName(p schedulerv1.Phase) string {
	switch p {
	case schedulerv1.Phase_PHASE_RUNNING:
		return "running"
	case schedulerv1.Phase_PHASE_FAILED:
		return "failed"
	case schedulerv1.Phase_PHASE_SUCCEEDED:
		return "succeeded"
	}
	return "pending"
}

// same: the status would not change (UpdatedAt aside).
func same(a, b []plan.Replica) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// stamp sets UpdatedAt on the replicas that changed.
func stamp(reps, prev []plan.Replica, now time.Time) {
	for i := range reps {
		if i < len(prev) {
			p := prev[i]
			p.UpdatedAt = reps[i].UpdatedAt
			if same([]plan.Replica{p}, reps[i:i+1]) {
				continue
			}
		}
		reps[i].UpdatedAt = now.UTC()
	}
}
