// Package plan is the scheduler's decision logic, kept pure: the desired
// workloads, the nodes and the containers seen on them go in; the actions to
// take and every replica's status come out. No I/O, no clock: Input.Now.
package plan

import (
	"time"

	schedulerv1 "github.com/shakedown-dev/shakedown/go/gen/scheduler/v1"

	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/bugs"
)

// Workload is the part of a desired workload that decisions depend on.
type Workload struct {
	ID         string
	Name       string
	Generation int64
	// Template is the generation at which what shapes a container (image,
	// command, env, ports, resources) last changed: containers of an older
	// template are replaced; a change of replicas or restart policy alone
	// replaces nothing.
	Template int64
	Replicas int
	Restart  schedulerv1.RestartPolicy
	NanoCPUs int64
	Memory   int64
}

// Node is one agent as last probed.
type Node struct {
	Name    string
	Healthy bool
	// Since the first failed probe (or the record vanished); 0 when healthy.
	UnreachableFor time.Duration
	NanoCPUs       int64 // capacity; 0: unknown, nothing with a CPU request fits
	Memory         int64
}

// Container is one workload container seen on a reachable node.
type Container struct {
	ID         string
	Node       string
	WorkloadID string
	Index      int
	Generation int64 // its template generation (label)
	State      State
	ExitCode   int
	Created    time.Time
}

// State is the container's engine state, reduced to what decisions need.
type State int

const (
	StateUnknown State = iota
	StateCreated
	StateRunning // also paused and restarting: the process exists
	StateExited
	StateDead // dead or being removed: replace it
)

// Replica is one replica's status: written by the leader, read by everyone.
type Replica struct {
	Index       int               `json:"index"`
	Phase       schedulerv1.Phase `json:"phase"`
	Node        string            `json:"node,omitempty"`
	ContainerID string            `json:"container_id,omitempty"`
	Restarts    int               `json:"restarts,omitempty"`
	LastError   string            `json:"last_error,omitempty"`
	Reason      string            `json:"reason,omitempty"`
	// The workload generation its container conforms to.
	ObservedGeneration int64 `json:"observed_generation,omitempty"`
	// The template generation its container was created from.
	Template int64 `json:"template,omitempty"`
	// When the scheduler last restarted or recreated it: the back-off's origin.
	LastRestart time.Time `json:"last_restart,omitzero"`
	// It exited and its policy says not to restart: a removed container is not
	// recreated (until the spec changes).
	Done bool `json:"done,omitempty"`
	// Consecutive failed creates, and when the last was tried: creates back
	// off like restarts, so a bad image is not pulled every pass.
	Failures    int       `json:"failures,omitempty"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	// When the status last changed (set by the writer, not by decisions).
	UpdatedAt time.Time `json:"updated_at,omitzero"`
}

// Kind is what an action does.
type Kind int

const (
	Create Kind = iota + 1
	Start
	Remove
)

func (k Kind) String() string {
	switch k {
	case Create:
		return "create"
	case Start:
		return "start"
	case Remove:
		return "remove"
	}
	return "unknown"
}

// Action is one change to make on one node. Removes come first in a plan, so
// a replacement never collides with what it replaces (names, host ports).
type Action struct {
	Kind        Kind
	Node        string
	WorkloadID  string
	Index       int
	Generation  int64  // Create: the template generation to create from
	ContainerID string // Start, Remove
	Reason      string
}

// Input is everything one decision sees.
type Input struct {
	Now         time.Time
	NodeTimeout time.Duration // unreachable this long: its replicas move
	Workloads   []Workload
	Nodes       []Node
	// From reachable nodes only: an unreachable node's containers are unknown.
	Containers []Container
	Status     map[string][]Replica // the previous status, by workload id
	Bugs       bugs.Set             // planted bugs to act out (none in production)
}

// Output is the decision: actions, and the status they lead to.
type Output struct {
	Actions []Action
	Status  map[string][]Replica
}

// Backoff is the delay before restarting a replica restarted n times already:
// none for the first, then 1s, 2s, 4s... capped at MaxBackoff.
func Backoff(n int) time.Duration {
	if n <= 0 {
		return 0
	}
	if n > 6 {
		return MaxBackoff
	}
	return min(time.Second<<(n-1), MaxBackoff)
}

// MaxBackoff caps the restart back-off of a crash-looping replica.
const MaxBackoff = 30 * time.Second
