package plan

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	schedulerv1 "github.com/shakedown-dev/shakedown/go/gen/scheduler/v1"

	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/bugs"
)

type replicaKey struct {
	workload string
	index    int
}

// need is a replica without a usable container: placement gives it a node.
type need struct {
	w         *Workload
	status    *Replica
	preferred string
}

// Decide is one reconciliation: compare desired with observed and say what to do.
func Decide(in Input) Output {
	out := Output{Status: map[string][]Replica{}}
	nodes := map[string]Node{}
	for _, n := range in.Nodes {
		nodes[n.Name] = n
	}
	workloads := slices.Clone(in.Workloads)
	slices.SortFunc(workloads, func(a, b Workload) int { return cmp.Compare(a.ID, b.ID) })
	byID := map[string]*Workload{}
	for i := range workloads {
		byID[workloads[i].ID] = &workloads[i]
	}

	// Containers of deleted workloads or of indices scaled away go; the rest
	// are grouped by the replica they claim to be.
	groups := map[replicaKey][]Container{}
	for _, c := range in.Containers {
		w, ok := byID[c.WorkloadID]
		switch {
		case !ok:
			out.remove(c, "workload deleted")
		case c.Index >= w.Replicas:
			if in.Bugs.Has(bugs.SkipOrphanGC) {
				continue // PLANTED BUG: the scaled-away replica's container is forgotten, not removed
			}
			out.remove(c, fmt.Sprintf("scaled down to %d replicas", w.Replicas))
		default:
			k := replicaKey{c.WorkloadID, c.Index}
			groups[k] = append(groups[k], c)
		}
	}

	u := newUsage()
	var needs []need
	for _, w := range workloads {
		prev := in.Status[w.ID]
		reps := make([]Replica, w.Replicas)
		for i := range reps {
			r := &reps[i]
			if i < len(prev) && prev[i].Index == i {
				*r = prev[i]
			}
			r.Index = i
			if n, ok := decideReplica(&out, in, nodes, &w, r, groups[replicaKey{w.ID, i}], u); ok {
				needs = append(needs, n)
			}
		}
		out.Status[w.ID] = reps
	}
	// Pointers into out.Status are stable from here: the slices are complete.
	for i := range needs {
		needs[i].status = &out.Status[needs[i].w.ID][needs[i].status.Index]
	}
	place(&out, in.Nodes, needs, u)
	slices.SortStableFunc(out.Actions, func(a, b Action) int {
		return cmp.Compare(order(a.Kind), order(b.Kind))
	})
	return out
}

func order(k Kind) int {
	if k == Remove {
		return 0
	}
	return 1
}

// decideReplica settles one replica given its containers; ok when it needs a node.
func decideReplica(out *Output, in Input, nodes map[string]Node, w *Workload, r *Replica, cands []Container, u *usage) (need, bool) {
	if r.Template != 0 && r.Template != w.Template {
		// A new template runs again, whatever the old one did, and its first
		// create is not held back by the old one's failures.
		r.Done, r.Failures = false, 0
	}
	if len(cands) == 0 {
		n, known := nodes[r.Node]
		switch {
		case r.Node != "" && known && !n.Healthy && n.UnreachableFor < in.NodeTimeout:
			// Maybe still running there: wait out the timeout before moving it.
			r.Reason = fmt.Sprintf("node %s unreachable for %s", r.Node, n.UnreachableFor.Round(time.Second))
			u.add(r.Node, w)
			return need{}, false
		case r.Done && r.Template == w.Template:
			r.ObservedGeneration = w.Generation
			return need{}, false
		}
		if wait := r.LastAttempt.Add(Backoff(r.Failures)).Sub(in.Now); r.Failures > 0 && wait > 0 {
			r.Reason = fmt.Sprintf("create failed %d times; next try in %s", r.Failures, wait.Round(time.Second))
			return need{}, false
		}
		switch {
		case r.ContainerID == "":
			r.Reason = ""
		case !known || !n.Healthy: // it existed and its node is lost
			r.Restarts++
			r.LastRestart = in.Now
			r.Reason = fmt.Sprintf("moving off node %s, unreachable", r.Node)
		default: // it existed and is gone
			r.Restarts++
			r.LastRestart = in.Now
			r.Reason = "container removed; recreating"
		}
		return need{w: w, status: r, preferred: r.Node}, true
	}

	keep := pick(cands, w.Template, r)
	for _, c := range cands {
		if c.ID != keep.ID {
			out.remove(c, fmt.Sprintf("duplicate of replica %d (keeping %s)", r.Index, short(keep.ID)))
		}
	}
	r.Node, r.ContainerID, r.Template = keep.Node, keep.ID, keep.Generation
	if keep.Generation != w.Template {
		out.remove(keep, fmt.Sprintf("generation %d superseded by %d", keep.Generation, w.Template))
		r.ContainerID, r.Phase, r.Done = "", schedulerv1.Phase_PHASE_PENDING, false
		r.Reason = fmt.Sprintf("updating to generation %d", w.Generation)
		return need{w: w, status: r, preferred: keep.Node}, true
	}
	r.ObservedGeneration = w.Generation
	switch keep.State {
	case StateRunning:
		r.Phase, r.Reason, r.Done = schedulerv1.Phase_PHASE_RUNNING, "", false
		u.add(keep.Node, w)
	case StateCreated:
		r.Phase, r.Reason = schedulerv1.Phase_PHASE_PENDING, "created; starting"
		out.Actions = append(out.Actions, action(Start, keep, "created, not started"))
		u.add(keep.Node, w)
	case StateExited:
		u.add(keep.Node, w) // keep its room: it restarts in place
		exited(out, in, w, r, keep)
	case StateUnknown: // never destroy what we cannot read: look again next pass
		r.Phase, r.Reason = schedulerv1.Phase_PHASE_PENDING, "container state unknown"
		u.add(keep.Node, w)
	default: // dead or being removed: replace it
		out.remove(keep, "container is dead")
		r.ContainerID, r.Phase = "", schedulerv1.Phase_PHASE_PENDING
		r.Restarts++
		r.LastRestart = in.Now
		r.Reason = "container dead; recreating"
		return need{w: w, status: r, preferred: keep.Node}, true
	}
	return need{}, false
}

// exited applies the restart policy to a container that stopped.
func exited(out *Output, in Input, w *Workload, r *Replica, c Container) {
	restart := w.Restart != schedulerv1.RestartPolicy_RESTART_POLICY_NEVER &&
		(w.Restart != schedulerv1.RestartPolicy_RESTART_POLICY_ON_FAILURE || c.ExitCode != 0)
	if !restart {
		r.Done, r.Reason = true, fmt.Sprintf("exited with code %d", c.ExitCode)
		r.Phase = schedulerv1.Phase_PHASE_FAILED
		if c.ExitCode == 0 {
			r.Phase = schedulerv1.Phase_PHASE_SUCCEEDED
		}
		return
	}
	r.Phase = schedulerv1.Phase_PHASE_PENDING
	if wait := r.LastRestart.Add(Backoff(r.Restarts)).Sub(in.Now); !r.LastRestart.IsZero() && wait > 0 {
		r.Reason = fmt.Sprintf("exited with code %d; restart back-off %s", c.ExitCode, wait.Round(time.Second))
		return
	}
	r.Restarts++
	r.LastRestart = in.Now
	r.Reason = fmt.Sprintf("exited with code %d; restarting", c.ExitCode)
	out.Actions = append(out.Actions, action(Start, c, r.Reason))
}

// pick is the container a replica keeps: the current generation, running, the
// one it had, on the node it had, the newest (in that order); then by id.
func pick(cands []Container, gen int64, r *Replica) Container {
	score := func(c Container) [4]bool {
		return [4]bool{c.Generation == gen, c.State == StateRunning, c.ID == r.ContainerID, c.Node == r.Node}
	}
	best := cands[0]
	for _, c := range cands[1:] {
		if better(score(c), score(best)) ||
			(score(c) == score(best) && (c.Created.After(best.Created) || (c.Created.Equal(best.Created) && c.ID < best.ID))) {
			best = c
		}
	}
	return best
}

func better(a, b [4]bool) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i]
		}
	}
	return false
}

func action(k Kind, c Container, reason string) Action {
	return Action{Kind: k, Node: c.Node, WorkloadID: c.WorkloadID, Index: c.Index,
		Generation: c.Generation, ContainerID: c.ID, Reason: reason}
}

func (o *Output) remove(c Container, reason string) {
	o.Actions = append(o.Actions, action(Remove, c, reason))
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
