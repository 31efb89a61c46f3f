package reconcile

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	schedulerv1 "github.com/shakedown-dev/shakedown/go/gen/scheduler/v1"

	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/bugs"
)

// scale changes a workload's replicas as an acknowledged apply would: a new
// generation, the same template.
func (s *fakeState) scale(id string, replicas int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.records {
		if s.records[i].ID == id {
			spec := proto.Clone(s.records[i].Spec).(*schedulerv1.WorkloadSpec)
			spec.Replicas = replicas
			s.records[i].Spec = spec
			s.records[i].Generation++
		}
	}
}

func (s *fakeState) replicasWanted(id string) int32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.records {
		if r.ID == id {
			return r.Spec.GetReplicas()
		}
	}
	return -1
}

func TestPlantedBlindWriteLosesAnAcknowledgedScale(t *testing.T) {
	for _, planted := range []bool{false, true} {
		set := bugs.Set{}
		if planted {
			set[bugs.BlindWrite] = true
		}
		r, c, st, clk := setupBugs(t, set, "n1")
		id := st.add("web", 1, always)
		pass(t, r)
		clk.advance(time.Second)
		pass(t, r) // running
		st.scale(id, 2)
		clk.advance(time.Second)
		pass(t, r) // creates replica 1; the status changes
		clk.advance(time.Second)
		pass(t, r)
		got, n := st.replicasWanted(id), len(c["n1"].ids())
		switch {
		case !planted && (got != 2 || n != 2 || st.puts != 0):
			t.Fatalf("default: spec wants %d replicas, %d containers, %d blind writes; want 2, 2, 0", got, n, st.puts)
		case planted && (got != 1 || n != 1 || st.puts == 0):
			t.Fatalf("blind-write: spec wants %d replicas, %d containers, %d blind writes; want the scale lost: 1, 1, >0",
				got, n, st.puts)
		}
	}
}

func TestPlantedDualLeaderReconcilesOnAfterItsTerm(t *testing.T) {
	for _, planted := range []bool{false, true} {
		set := bugs.Set{}
		if planted {
			set[bugs.DualLeader] = true
		}
		r, c, st, _ := setupBugs(t, set, "n1")
		id := st.add("web", 1, always)
		ctx, stop := context.WithCancel(context.Background())
		lctx, endTerm := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- r.Term(ctx, lctx, clientv3Guard) }()
		waitUntil(t, func() bool { return len(c["n1"].ids()) == 1 }, "the replica placed")

		// The lease ends; a new leader (not this one) deletes the workload and its container.
		endTerm()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Term did not return when the term ended")
		}
		st.mu.Lock()
		st.records, st.notLeader = nil, true
		st.mu.Unlock()
		for _, cid := range c["n1"].ids() {
			_ = c["n1"].Remove(context.Background(), cid)
		}
		c["n1"].events <- struct{}{} // what the removal's engine event would do
		if planted {
			// The deposed leader still acts, on the workload it last read: it comes back.
			waitUntil(t, func() bool { return len(c["n1"].ids()) == 1 }, "the zombie leader to recreate the container")
			if len(st.replicas(id)) == 0 {
				t.Fatal("no status from the real term")
			}
		} else if r.term.stop != nil {
			// By default Term is the loop itself: once it returned, nothing reconciles.
			t.Fatal("default: a loop outlives its term")
		}
		stop()
	}
}

func waitUntil(t *testing.T, ok func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
