package plan

import (
	"fmt"
	"slices"
	"strings"

	schedulerv1 "github.com/shakedown-dev/shakedown/go/gen/scheduler/v1"
)

// usage is what is already placed on each node.
type usage struct {
	cpu, mem, count map[string]int64
	perWorkload     map[string]map[string]int // node -> workload id -> replicas
}

func newUsage() *usage {
	return &usage{cpu: map[string]int64{}, mem: map[string]int64{}, count: map[string]int64{},
		perWorkload: map[string]map[string]int{}}
}

func (u *usage) add(node string, w *Workload) {
	u.cpu[node] += w.NanoCPUs
	u.mem[node] += w.Memory
	u.count[node]++
	if u.perWorkload[node] == nil {
		u.perWorkload[node] = map[string]int{}
	}
	u.perWorkload[node][w.ID]++
}

// fits: a request of 0 reserves nothing and always fits; any other needs the
// node's capacity known and not yet taken.
func (u *usage) fits(n Node, w *Workload) bool {
	return (w.NanoCPUs == 0 || u.cpu[n.Name]+w.NanoCPUs <= n.NanoCPUs) &&
		(w.Memory == 0 || u.mem[n.Name]+w.Memory <= n.Memory)
}

// place gives every need a node: its preferred one when healthy, with room and
// no more of the workload than the best other (a recreate stays put), else the healthy node with the fewest replicas of the
// workload, then the fewest replicas at all, then by name: replicas spread.
// No room anywhere leaves the replica Pending with the reason.
func place(out *Output, nodes []Node, needs []need, u *usage) {
	healthy := slices.DeleteFunc(slices.Clone(nodes), func(n Node) bool { return !n.Healthy })
	slices.SortFunc(healthy, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	for _, nd := range needs {
		w, r := nd.w, nd.status
		var chosen, preferred *Node
		for i := range healthy {
			n := &healthy[i]
			if !u.fits(*n, w) {
				continue
			}
			if n.Name == nd.preferred {
				preferred = n
			}
			if chosen == nil || spreadLess(u, w, n, chosen) {
				chosen = n
			}
		}
		if preferred != nil && u.perWorkload[preferred.Name][w.ID] <= u.perWorkload[chosen.Name][w.ID] {
			chosen = preferred
		}
		if chosen == nil {
			r.Phase, r.Node, r.ContainerID = schedulerv1.Phase_PHASE_PENDING, "", ""
			r.Reason = unschedulable(healthy, w)
			continue
		}
		u.add(chosen.Name, w)
		r.Phase, r.Node, r.ContainerID = schedulerv1.Phase_PHASE_PENDING, chosen.Name, ""
		r.ObservedGeneration, r.Template = w.Generation, w.Template
		r.Done = false
		if r.Reason == "" {
			r.Reason = "creating"
		}
		out.Actions = append(out.Actions, Action{Kind: Create, Node: chosen.Name, WorkloadID: w.ID,
			Index: r.Index, Generation: w.Template, Reason: r.Reason})
	}
}

func spreadLess(u *usage, w *Workload, a, b *Node) bool {
	if x, y := u.perWorkload[a.Name][w.ID], u.perWorkload[b.Name][w.ID]; x != y {
		return x < y
	}
	return u.count[a.Name] < u.count[b.Name] // names already ascending: ties keep the first
}

func unschedulable(healthy []Node, w *Workload) string {
	if len(healthy) == 0 {
		return "no healthy node"
	}
	var want []string
	if w.NanoCPUs > 0 {
		want = append(want, fmt.Sprintf("%g CPUs", float64(w.NanoCPUs)/1e9))
	}
	if w.Memory > 0 {
		want = append(want, fmt.Sprintf("%d bytes of memory", w.Memory))
	}
	return fmt.Sprintf("no healthy node has room for %s (%d healthy)", strings.Join(want, " and "), len(healthy))
}
