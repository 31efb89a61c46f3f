package plan

import (
	"strings"
	"testing"
	"time"

	schedulerv1 "github.com/shakedown-dev/shakedown/go/gen/scheduler/v1"

	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/bugs"
)

var now = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

const (
	always    = schedulerv1.RestartPolicy_RESTART_POLICY_ALWAYS
	onFailure = schedulerv1.RestartPolicy_RESTART_POLICY_ON_FAILURE
	never     = schedulerv1.RestartPolicy_RESTART_POLICY_NEVER
	pending   = schedulerv1.Phase_PHASE_PENDING
	running   = schedulerv1.Phase_PHASE_RUNNING
	failed    = schedulerv1.Phase_PHASE_FAILED
	succeeded = schedulerv1.Phase_PHASE_SUCCEEDED
)

func healthy(names ...string) []Node {
	var ns []Node
	for _, n := range names {
		ns = append(ns, Node{Name: n, Healthy: true, NanoCPUs: 4e9, Memory: 8 << 30})
	}
	return ns
}

func web(replicas int, policy schedulerv1.RestartPolicy) Workload {
	return Workload{ID: "w1", Name: "web", Generation: 1, Template: 1, Replicas: replicas, Restart: policy}
}

func ctr(id, node string, index int, state State, exit int) Container {
	return Container{ID: id, Node: node, WorkloadID: "w1", Index: index, Generation: 1, State: state, ExitCode: exit}
}

func kinds(acts []Action) string {
	var s []string
	for _, a := range acts {
		s = append(s, a.Kind.String()+":"+a.Node+":"+a.ContainerID)
	}
	return strings.Join(s, " ")
}

func TestSpreadsReplicasOverHealthyNodes(t *testing.T) {
	nodes := append(healthy("n1", "n2", "n3"), Node{Name: "n0", Healthy: false, UnreachableFor: time.Second})
	out := Decide(Input{Now: now, NodeTimeout: 10 * time.Second, Workloads: []Workload{web(3, always)}, Nodes: nodes})
	if got, want := kinds(out.Actions), "create:n1: create:n2: create:n3:"; got != want {
		t.Fatalf("actions %q, want %q", got, want)
	}
	for i, r := range out.Status["w1"] {
		if r.Phase != pending || r.Node == "" || r.ObservedGeneration != 1 || r.Index != i {
			t.Errorf("replica %d: %+v", i, r)
		}
	}
}

func TestSpreadCountsWhatIsAlreadyRunning(t *testing.T) {
	in := Input{Now: now, Workloads: []Workload{web(2, always)}, Nodes: healthy("n1", "n2"),
		Containers: []Container{ctr("c0", "n1", 0, StateRunning, 0)}}
	out := Decide(in)
	if got, want := kinds(out.Actions), "create:n2:"; got != want {
		t.Fatalf("actions %q, want %q", got, want)
	}
	if r := out.Status["w1"][0]; r.Phase != running || r.ContainerID != "c0" || r.Node != "n1" {
		t.Fatalf("replica 0: %+v", r)
	}
}

func TestMoreReplicasThanCapacityStayPendingWithAReason(t *testing.T) {
	w := web(3, always)
	w.NanoCPUs = 6e8 // 0.6 CPU: one per 1-CPU node
	nodes := []Node{{Name: "n1", Healthy: true, NanoCPUs: 1e9, Memory: 1 << 30}, {Name: "n2", Healthy: true, NanoCPUs: 1e9, Memory: 1 << 30}}
	out := Decide(Input{Now: now, Workloads: []Workload{w}, Nodes: nodes})
	if got, want := kinds(out.Actions), "create:n1: create:n2:"; got != want {
		t.Fatalf("actions %q, want %q", got, want)
	}
	r := out.Status["w1"][2]
	if r.Phase != pending || r.Node != "" || !strings.Contains(r.Reason, "no healthy node has room for 0.6 CPUs") {
		t.Fatalf("replica 2: %+v", r)
	}
}

func TestUnknownCapacityFitsOnlyRequestFreeWorkloads(t *testing.T) {
	w := web(1, always)
	w.Memory = 1 << 20
	out := Decide(Input{Now: now, Workloads: []Workload{w}, Nodes: []Node{{Name: "n1", Healthy: true}}})
	if len(out.Actions) != 0 || out.Status["w1"][0].Phase != pending {
		t.Fatalf("placed on a node of unknown capacity: %v %+v", out.Actions, out.Status)
	}
}

func TestNoHealthyNode(t *testing.T) {
	out := Decide(Input{Now: now, Workloads: []Workload{web(1, always)}})
	if len(out.Actions) != 0 || out.Status["w1"][0].Reason != "no healthy node" {
		t.Fatalf("%v %+v", out.Actions, out.Status)
	}
}

func TestExitedReplicaFollowsRestartPolicy(t *testing.T) {
	cases := []struct {
		policy schedulerv1.RestartPolicy
		exit   int
		start  bool
		phase  schedulerv1.Phase
	}{
		{always, 0, true, pending},
		{always, 137, true, pending},
		{schedulerv1.RestartPolicy_RESTART_POLICY_UNSPECIFIED, 0, true, pending},
		{onFailure, 1, true, pending},
		{onFailure, 0, false, succeeded},
		{never, 1, false, failed},
		{never, 0, false, succeeded},
	}
	for _, c := range cases {
		in := Input{Now: now, Workloads: []Workload{web(1, c.policy)}, Nodes: healthy("n1"),
			Containers: []Container{ctr("c0", "n1", 0, StateExited, c.exit)},
			Status:     map[string][]Replica{"w1": {{Index: 0, Node: "n1", ContainerID: "c0", Phase: running}}}}
		out := Decide(in)
		r := out.Status["w1"][0]
		started := kinds(out.Actions) == "start:n1:c0"
		if started != c.start || r.Phase != c.phase {
			t.Errorf("%v exit %d: actions %q phase %v", c.policy, c.exit, kinds(out.Actions), r.Phase)
		}
		if c.start && (r.Restarts != 1 || !r.LastRestart.Equal(now)) {
			t.Errorf("%v exit %d: restart not counted: %+v", c.policy, c.exit, r)
		}
		if !c.start && !r.Done {
			t.Errorf("%v exit %d: not marked done", c.policy, c.exit)
		}
	}
}

func TestFinishedReplicaIsNotRecreatedWhenRemoved(t *testing.T) {
	in := Input{Now: now, Workloads: []Workload{web(1, never)}, Nodes: healthy("n1"),
		Status: map[string][]Replica{"w1": {{Index: 0, Node: "n1", ContainerID: "c0", Phase: failed, Done: true, ObservedGeneration: 1, Template: 1}}}}
	if out := Decide(in); len(out.Actions) != 0 || out.Status["w1"][0].Phase != failed {
		t.Fatalf("%v %+v", out.Actions, out.Status)
	}
	// A new generation that changes no container (say, of its restart policy) does not rerun it...
	in.Workloads[0].Generation = 2
	if out := Decide(in); len(out.Actions) != 0 || out.Status["w1"][0].ObservedGeneration != 2 {
		t.Fatalf("generation 2, same template: %q %+v", kinds(out.Actions), out.Status["w1"][0])
	}
	// ...a new template does.
	in.Workloads[0].Template = 2
	if out := Decide(in); kinds(out.Actions) != "create:n1:" {
		t.Fatalf("template 2: %q", kinds(out.Actions))
	}
}

func TestCrashLoopBacksOff(t *testing.T) {
	prev := Replica{Index: 0, Node: "n1", ContainerID: "c0", Restarts: 3, LastRestart: now.Add(-time.Second)}
	in := Input{Now: now, Workloads: []Workload{web(1, always)}, Nodes: healthy("n1"),
		Containers: []Container{ctr("c0", "n1", 0, StateExited, 1)}, Status: map[string][]Replica{"w1": {prev}}}
	out := Decide(in)
	if len(out.Actions) != 0 || !strings.Contains(out.Status["w1"][0].Reason, "back-off 3s") {
		t.Fatalf("restarted inside its back-off: %v %+v", out.Actions, out.Status["w1"][0])
	}
	in.Now = now.Add(Backoff(3))
	if out = Decide(in); kinds(out.Actions) != "start:n1:c0" || out.Status["w1"][0].Restarts != 4 {
		t.Fatalf("not restarted after its back-off: %q %+v", kinds(out.Actions), out.Status["w1"][0])
	}
}

func TestCreatedContainerIsStarted(t *testing.T) {
	in := Input{Now: now, Workloads: []Workload{web(1, always)}, Nodes: healthy("n1"),
		Containers: []Container{ctr("c0", "n1", 0, StateCreated, 0)}}
	if out := Decide(in); kinds(out.Actions) != "start:n1:c0" {
		t.Fatalf("%q", kinds(out.Actions))
	}
}

func TestRemovedContainerIsRecreatedInPlace(t *testing.T) {
	in := Input{Now: now, Workloads: []Workload{web(1, always)}, Nodes: healthy("n1", "n2"),
		Status: map[string][]Replica{"w1": {{Index: 0, Node: "n2", ContainerID: "c0", Phase: running, ObservedGeneration: 1}}}}
	out := Decide(in)
	r := out.Status["w1"][0]
	if kinds(out.Actions) != "create:n2:" || r.Restarts != 1 || r.ContainerID != "" || r.Node != "n2" {
		t.Fatalf("%q %+v", kinds(out.Actions), r)
	}
}

func TestDeadContainerIsReplaced(t *testing.T) {
	in := Input{Now: now, Workloads: []Workload{web(1, always)}, Nodes: healthy("n1"),
		Containers: []Container{ctr("c0", "n1", 0, StateDead, 0)}}
	if out := Decide(in); kinds(out.Actions) != "remove:n1:c0 create:n1:" {
		t.Fatalf("%q", kinds(out.Actions))
	}
}

func TestUnreachableNodeWaitsThenMoves(t *testing.T) {
	prev := map[string][]Replica{"w1": {{Index: 0, Node: "n1", ContainerID: "c0", Phase: running, ObservedGeneration: 1}}}
	nodes := append(healthy("n2"), Node{Name: "n1", UnreachableFor: 5 * time.Second})
	in := Input{Now: now, NodeTimeout: 10 * time.Second, Workloads: []Workload{web(1, always)}, Nodes: nodes, Status: prev}
	out := Decide(in)
	if len(out.Actions) != 0 || out.Status["w1"][0].Node != "n1" || !strings.Contains(out.Status["w1"][0].Reason, "unreachable for 5s") {
		t.Fatalf("moved before the timeout: %q %+v", kinds(out.Actions), out.Status["w1"][0])
	}
	in.Nodes[1].UnreachableFor = 10 * time.Second
	out = Decide(in)
	if r := out.Status["w1"][0]; kinds(out.Actions) != "create:n2:" || r.Node != "n2" || !strings.Contains(r.Reason, "moving off node n1") {
		t.Fatalf("not moved after the timeout: %q %+v", kinds(out.Actions), r)
	}
	// A node that vanished from the node list altogether is lost too.
	in.Nodes = healthy("n2")
	if out = Decide(in); kinds(out.Actions) != "create:n2:" {
		t.Fatalf("vanished node: %q", kinds(out.Actions))
	}
}

func TestDuplicatesAreRemovedKeepingTheRunningOne(t *testing.T) {
	old := ctr("c-old", "n1", 0, StateExited, 137) // on the node that came back
	cur := ctr("c-new", "n2", 0, StateRunning, 0)
	in := Input{Now: now, Workloads: []Workload{web(1, always)}, Nodes: healthy("n1", "n2"),
		Containers: []Container{old, cur},
		Status:     map[string][]Replica{"w1": {{Index: 0, Node: "n2", ContainerID: "c-new", Phase: running}}}}
	out := Decide(in)
	if got := kinds(out.Actions); got != "remove:n1:c-old" {
		t.Fatalf("actions %q", got)
	}
	if r := out.Status["w1"][0]; r.ContainerID != "c-new" || r.Phase != running {
		t.Fatalf("%+v", r)
	}
}

func TestOrphansAndScaledAwayReplicasAreRemoved(t *testing.T) {
	orphan := Container{ID: "c9", Node: "n1", WorkloadID: "gone", Generation: 1, State: StateRunning}
	in := Input{Now: now, Workloads: []Workload{web(1, always)}, Nodes: healthy("n1"),
		Containers: []Container{ctr("c0", "n1", 0, StateRunning, 0), ctr("c1", "n1", 1, StateRunning, 0), orphan}}
	out := Decide(in)
	if got := kinds(out.Actions); got != "remove:n1:c1 remove:n1:c9" {
		t.Fatalf("actions %q", got)
	}
	if len(out.Status["w1"]) != 1 {
		t.Fatalf("status of %d replicas, want 1", len(out.Status["w1"]))
	}
}

func TestNewGenerationReplacesRemovesFirst(t *testing.T) {
	w := web(1, always)
	w.Generation, w.Template = 2, 2
	in := Input{Now: now, Workloads: []Workload{w}, Nodes: healthy("n1", "n2"),
		Containers: []Container{ctr("c0", "n1", 0, StateRunning, 0)}}
	out := Decide(in)
	if got := kinds(out.Actions); got != "remove:n1:c0 create:n1:" {
		t.Fatalf("actions %q", got)
	}
	if a := out.Actions[1]; a.Generation != 2 {
		t.Fatalf("created from generation %d", a.Generation)
	}
	if r := out.Status["w1"][0]; r.ObservedGeneration != 2 || r.Phase != pending {
		t.Fatalf("%+v", r)
	}
}

func TestBackoff(t *testing.T) {
	for n, want := range map[int]time.Duration{0: 0, 1: time.Second, 2: 2 * time.Second, 5: 16 * time.Second, 6: MaxBackoff, 100: MaxBackoff} {
		if got := Backoff(n); got != want {
			t.Errorf("Backoff(%d) = %s, want %s", n, got, want)
		}
	}
}

func TestScalingReplacesNothing(t *testing.T) {
	w := web(3, always)
	w.Generation = 2 // replicas 2 -> 3; the template is still 1
	in := Input{Now: now, Workloads: []Workload{w}, Nodes: healthy("n1", "n2"),
		Containers: []Container{ctr("c0", "n1", 0, StateRunning, 0), ctr("c1", "n2", 1, StateRunning, 0)}}
	out := Decide(in)
	if got := kinds(out.Actions); got != "create:n1:" {
		t.Fatalf("actions %q", got)
	}
	if a := out.Actions[0]; a.Generation != 1 || a.Index != 2 {
		t.Fatalf("created %+v", a)
	}
	for i, r := range out.Status["w1"] {
		if r.ObservedGeneration != 2 {
			t.Errorf("replica %d observed generation %d, want 2", i, r.ObservedGeneration)
		}
	}
}

func TestNewTemplateForgetsCreateFailures(t *testing.T) {
	w := web(1, always)
	prev := Replica{Index: 0, Phase: failed, Failures: 5, LastAttempt: now, Template: 1, LastError: "pull failed"}
	in := Input{Now: now, Workloads: []Workload{w}, Nodes: healthy("n1"), Status: map[string][]Replica{"w1": {prev}}}
	if out := Decide(in); len(out.Actions) != 0 {
		t.Fatalf("retried inside the back-off: %q", kinds(out.Actions))
	}
	in.Workloads[0].Generation, in.Workloads[0].Template = 2, 2 // a fixed image
	if out := Decide(in); kinds(out.Actions) != "create:n1:" {
		t.Fatalf("the new template waited for the old one's back-off: %q", kinds(out.Actions))
	}
}

func TestUnknownStateIsLeftAlone(t *testing.T) {
	in := Input{Now: now, Workloads: []Workload{web(1, always)}, Nodes: healthy("n1"),
		Containers: []Container{ctr("c0", "n1", 0, StateUnknown, 0)}}
	if out := Decide(in); len(out.Actions) != 0 || out.Status["w1"][0].ContainerID != "c0" {
		t.Fatalf("%q %+v", kinds(out.Actions), out.Status["w1"][0])
	}
}

func TestPlantedSkipOrphanGCKeepsScaledAwayContainers(t *testing.T) {
	in := Input{Now: now, NodeTimeout: 10 * time.Second, Workloads: []Workload{web(1, always)}, Nodes: healthy("n1"),
		Containers: []Container{ctr("c0", "n1", 0, StateRunning, 0), ctr("c1", "n1", 1, StateRunning, 0)}}
	if got := kinds(Decide(in).Actions); got != "remove:n1:c1" {
		t.Fatalf("default: actions %q, want the scaled-away container removed", got)
	}
	in.Bugs = bugs.Set{bugs.SkipOrphanGC: true}
	if got := kinds(Decide(in).Actions); got != "" {
		t.Fatalf("skip-orphan-gc: actions %q, want none (the orphan stays)", got)
	}
	in.Workloads = nil // a deleted workload's containers still go
	if got := kinds(Decide(in).Actions); got != "remove:n1:c0 remove:n1:c1" {
		t.Fatalf("skip-orphan-gc, deleted workload: actions %q", got)
	}
}
