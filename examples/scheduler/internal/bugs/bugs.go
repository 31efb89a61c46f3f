// Package bugs names the deliberately wrong behaviours ("planted bugs") the
// reference scheduler can be started with, so that a black-box fuzzer can be
// shown to find them. Every one is off unless named by -bug NAME (repeatable)
// or SHAKEDOWN_SCHEDULER_BUGS=a,b; a scheduler without either is correct.
package bugs

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// The planted bugs, one per kind of fault a checker should catch.
const (
	// SkipOrphanGC (reconciliation): containers of replicas scaled away are
	// never removed; they run on as orphans next to the wanted ones.
	SkipOrphanGC = "skip-orphan-gc"
	// DualLeader (leadership): a leader whose lease ended (paused past the
	// TTL) does not stop; it goes on reconciling, from the desired state it
	// last read, beside the new leader, until it is elected again.
	DualLeader = "dual-leader"
	// BlindWrite (state consistency): after a status change the leader
	// writes the workload record it cached when it last created containers
	// back to etcd without the revision check, so an acknowledged change of
	// replicas or restart policy (or a delete that lands mid-pass) is lost.
	BlindWrite = "blind-write"
)

// EnvVar lists planted bugs, comma-separated, in addition to -bug.
const EnvVar = "SHAKEDOWN_SCHEDULER_BUGS"

// Known is every planted bug with what it breaks.
var Known = map[string]string{
	SkipOrphanGC: "containers of scaled-away replicas are never removed (orphans)",
	DualLeader:   "a leader that lost its lease keeps reconciling a stale desired state (two leaders)",
	BlindWrite:   "the leader writes stale workload records back without the revision check (lost updates)",
}

// Set is the planted bugs enabled; the zero value enables none.
type Set map[string]bool

// Has says whether bug name is enabled.
func (s Set) Has(name string) bool { return s[name] }

// Known is the name of every planted bug, sorted (a method, for flag help).
func (Set) Known() []string { return slices.Sorted(maps.Keys(Known)) }

// Names is the enabled bugs, sorted.
func (s Set) Names() []string { return slices.Sorted(maps.Keys(s)) }

// String is the names, comma-separated (flag.Value).
func (s Set) String() string { return strings.Join(s.Names(), ",") }

// Set enables one bug by name (flag.Value, so -bug is repeatable).
func (s Set) Set(name string) error {
	name = strings.TrimSpace(name)
	if _, ok := Known[name]; !ok {
		return fmt.Errorf("%q is not a planted bug; known: %s", name, strings.Join(s.Known(), ", "))
	}
	s[name] = true
	return nil
}

// AddList enables every bug of a comma-separated list (empty items skipped).
func (s Set) AddList(list string) error {
	for _, name := range strings.Split(list, ",") {
		if strings.TrimSpace(name) == "" {
			continue
		}
		if err := s.Set(name); err != nil {
			return err
		}
	}
	return nil
}
