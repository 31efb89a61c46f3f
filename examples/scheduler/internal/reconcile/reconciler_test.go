package reconcile

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/shakedown-dev/shakedown/go/agentclient"
	schedulerv1 "github.com/shakedown-dev/shakedown/go/gen/scheduler/v1"

	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/bugs"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/labels"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/plan"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/store"
)

const always = schedulerv1.RestartPolicy_RESTART_POLICY_ALWAYS

func setup(t *testing.T, names ...string) (*Reconciler, cluster, *fakeState, *clock) {
	t.Helper()
	return setupBugs(t, nil, names...)
}

// setupBugs is setup with planted bugs enabled.
func setupBugs(t *testing.T, planted bugs.Set, names ...string) (*Reconciler, cluster, *fakeState, *clock) {
	t.Helper()
	c := cluster{}
	for _, n := range names {
		c[n] = newFakeAgent(n)
	}
	st := &fakeState{}
	clk := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	r := New(Config{Interval: time.Hour, NodeTimeout: 10 * time.Second, Bugs: planted}, st, c.dial, nil,
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	r.now = clk.now
	r.SetAgents(c.registered())
	return r, c, st, clk
}

func pass(t *testing.T, r *Reconciler) {
	t.Helper()
	if err := r.Pass(context.Background(), clientv3Guard); err != nil {
		t.Fatalf("pass: %v", err)
	}
}

func phases(reps []plan.Replica) string {
	var s []string
	for _, r := range reps {
		s = append(s, strings.TrimPrefix(r.Phase.String(), "PHASE_"))
	}
	return strings.Join(s, ",")
}

func TestPlacesRunsAndRestarts(t *testing.T) {
	r, c, st, clk := setup(t, "n1", "n2")
	id := st.add("web", 2, always)
	pass(t, r)
	if len(c["n1"].ids()) != 1 || len(c["n2"].ids()) != 1 {
		t.Fatalf("not spread: n1 %v, n2 %v", c["n1"].ids(), c["n2"].ids())
	}
	reps := st.replicas(id)
	if phases(reps) != "PENDING,PENDING" || reps[0].ContainerID == "" || reps[0].ObservedGeneration != 1 {
		t.Fatalf("after create: %+v", reps)
	}
	created := c["n1"].containers[c["n1"].ids()[0]]
	if l, err := labels.Parse(created.labels); err != nil || l.WorkloadID != id || l.Generation != 1 {
		t.Fatalf("labels %v: %+v %v", created.labels, l, err)
	}

	clk.advance(time.Second)
	pass(t, r)
	if got := phases(st.replicas(id)); got != "RUNNING,RUNNING" {
		t.Fatalf("phases %s", got)
	}

	// Killed: restarted in place, counted.
	victim := st.replicas(id)[0]
	c[victim.Node].exit(victim.ContainerID, 137)
	clk.advance(time.Second)
	pass(t, r)
	if got := st.replicas(id)[0]; got.Restarts != 1 || got.ContainerID != victim.ContainerID {
		t.Fatalf("not restarted: %+v (calls %v)", got, c[victim.Node].calls)
	}
	clk.advance(time.Second)
	pass(t, r)
	if got := st.replicas(id)[0]; got.Phase != schedulerv1.Phase_PHASE_RUNNING {
		t.Fatalf("after restart: %+v", got)
	}

	// Removed behind our back: recreated, on the same node.
	_ = c[victim.Node].Remove(context.Background(), victim.ContainerID)
	clk.advance(time.Second)
	pass(t, r)
	got := st.replicas(id)[0]
	if got.Node != victim.Node || got.ContainerID == "" || got.ContainerID == victim.ContainerID || got.Restarts != 2 {
		t.Fatalf("not recreated: %+v", got)
	}
}

func TestUnreachableNodeLosesItsReplicasAfterTheTimeoutOnly(t *testing.T) {
	r, c, st, clk := setup(t, "n1", "n2")
	id := st.add("db", 1, always)
	pass(t, r)
	first := st.replicas(id)[0]
	lost, other := c[first.Node], c["n1"]
	if first.Node == "n1" {
		other = c["n2"]
	}
	lost.setDown(true)
	clk.advance(5 * time.Second)
	pass(t, r)
	if got := st.replicas(id)[0]; got.Node != first.Node || len(other.ids()) != 0 {
		t.Fatalf("moved before the node timeout: %+v", got)
	}
	if ns := st.nodes; ns[0].Healthy == ns[1].Healthy {
		t.Fatalf("node health not recorded: %+v", ns)
	}
	clk.advance(5 * time.Second)
	pass(t, r)
	moved := st.replicas(id)[0]
	if moved.Node != other.name || len(other.ids()) != 1 || moved.Restarts != 1 {
		t.Fatalf("not moved after the node timeout: %+v", moved)
	}

	// The node returns with the old container: the duplicate goes.
	lost.setDown(false)
	clk.advance(time.Second)
	pass(t, r)
	if ids := lost.ids(); len(ids) != 0 {
		t.Fatalf("duplicate left on %s: %v", lost.name, ids)
	}
	if got := st.replicas(id)[0]; got.ContainerID != moved.ContainerID {
		t.Fatalf("kept the wrong one: %+v", got)
	}
}

func TestDeregisteredNodeIsUnreachable(t *testing.T) {
	r, c, st, clk := setup(t, "n1")
	st.add("web", 1, always)
	pass(t, r)
	r.SetAgents(map[string]string{})
	clk.advance(time.Second)
	pass(t, r)
	if len(st.nodes) != 1 || st.nodes[0].Healthy || st.nodes[0].Registered {
		t.Fatalf("nodes %+v", st.nodes)
	}
	clk.advance(ForgetAfter - 2*time.Second)
	pass(t, r)
	if len(st.nodes) != 1 {
		t.Fatalf("forgotten too soon: %+v", st.nodes)
	}
	clk.advance(2 * time.Second)
	pass(t, r)
	if len(st.nodes) != 0 {
		t.Fatalf("forgotten node still listed: %+v", st.nodes)
	}
	_ = c
}

func TestPermanentCreateErrorFailsTheReplica(t *testing.T) {
	r, c, st, _ := setup(t, "n1")
	c["n1"].createErr = &agentclient.Error{Code: codes.PermissionDenied, Field: "spec.privileged", Message: "refused"}
	id := st.add("web", 1, always)
	pass(t, r)
	got := st.replicas(id)[0]
	if got.Phase != schedulerv1.Phase_PHASE_FAILED || !strings.Contains(got.LastError, "spec.privileged") {
		t.Fatalf("%+v", got)
	}
}

func TestTransientCreateErrorStaysPending(t *testing.T) {
	r, c, st, clk := setup(t, "n1")
	c["n1"].createErr = &agentclient.Error{Code: codes.Unavailable, Message: "docker restarting"}
	id := st.add("web", 1, always)
	pass(t, r)
	if got := st.replicas(id)[0]; got.Phase != schedulerv1.Phase_PHASE_PENDING || got.LastError == "" || got.Failures != 1 {
		t.Fatalf("%+v", got)
	}
	c["n1"].createErr = nil
	pass(t, r) // inside the back-off: not tried
	if got := st.replicas(id)[0]; got.ContainerID != "" || !strings.Contains(got.Reason, "next try in 1s") {
		t.Fatalf("retried inside the back-off: %+v", got)
	}
	clk.advance(time.Second)
	pass(t, r)
	if got := st.replicas(id)[0]; got.ContainerID == "" || got.LastError != "" || got.Failures != 0 {
		t.Fatalf("not retried: %+v", got)
	}
}

func TestDeletedWorkloadsContainersAreRemoved(t *testing.T) {
	r, c, st, _ := setup(t, "n1")
	st.add("web", 2, always)
	pass(t, r)
	st.records = nil
	pass(t, r)
	if ids := c["n1"].ids(); len(ids) != 0 {
		t.Fatalf("left: %v", ids)
	}
}

func TestRunStopsWhenNoLongerLeader(t *testing.T) {
	r, _, st, _ := setup(t, "n1")
	st.add("web", 1, always)
	st.notLeader = true
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background(), clientv3Guard) }()
	select {
	case err := <-done:
		if !errors.Is(err, store.ErrNotLeader) {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run went on after losing leadership")
	}
}

func TestAgentEventTriggersAPass(t *testing.T) {
	r, c, st, _ := setup(t, "n1")
	id := st.add("web", 1, always)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = r.Run(ctx, clientv3Guard) }()
	deadline := time.Now().Add(10 * time.Second)
	for len(st.replicas(id)) == 0 || st.replicas(id)[0].ContainerID == "" {
		if time.Now().After(deadline) {
			t.Fatal("first pass did not place the replica")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cid := st.replicas(id)[0].ContainerID
	// Interval is an hour: only the event can cause the restart.
	c["n1"].exit(cid, 1)
	for {
		c["n1"].events <- struct{}{}
		if rep := st.replicas(id)[0]; rep.Restarts == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an agent event did not trigger a pass")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestNewLeaderJudgesNodesFromThePreviousLeadersTable(t *testing.T) {
	for _, c := range []struct {
		name     string
		lastSeen time.Duration // before the term starts; 0: never seen
		move     bool
	}{{"never seen: wait a full timeout", 0, false}, {"lost a minute ago: move now", time.Minute, true}} {
		t.Run(c.name, func(t *testing.T) {
			r, cl, st, clk := setup(t, "n1", "n2")
			cl["n1"].setDown(true)
			id := st.add("db", 1, always)
			st.status = map[string][]plan.Replica{id: {{Index: 0, Node: "n1", ContainerID: "old", Phase: schedulerv1.Phase_PHASE_RUNNING, ObservedGeneration: 1}}}
			clk.advance(time.Hour) // a follower for an hour, then elected
			var stored []store.NodeStatus
			if c.lastSeen > 0 {
				stored = []store.NodeStatus{{Name: "n1", Healthy: true, LastSeen: clk.now().Add(-c.lastSeen)}}
			}
			r.nodes.Seed(clk.now(), stored)
			pass(t, r)
			if moved := len(cl["n2"].ids()) == 1; moved != c.move {
				t.Fatalf("moved %v, want %v: %+v", moved, c.move, st.replicas(id))
			}
		})
	}
}
