// Package agents is the scheduler's view of one node agent: the Agent
// interface the reconciler drives (faked in tests), and Remote, its
// implementation over the Go SDK (mTLS, every call signed with scheme v2).
package agents

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	"github.com/shakedown-dev/shakedown/go/agentclient"
	schedulerv1 "github.com/shakedown-dev/shakedown/go/gen/scheduler/v1"
	agentv1 "github.com/shakedown-dev/shakedown/go/gen/shakedown/agent/v1"

	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/labels"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/plan"
)

// Info is a node's capacity.
type Info struct {
	NanoCPUs int64
	Memory   int64
}

// CreateRequest is one replica's container to create and start.
type CreateRequest struct {
	WorkloadID string
	Index      int
	Generation int64
	Spec       *schedulerv1.WorkloadSpec
}

// Agent is one node, as the reconciler uses it.
type Agent interface {
	Info(ctx context.Context) (Info, error)
	// Containers lists every workload container on the node, stopped ones too.
	Containers(ctx context.Context) ([]plan.Container, error)
	Create(ctx context.Context, r CreateRequest) (id string, err error)
	Start(ctx context.Context, id string) error
	// Remove force-removes; a container already gone is no error.
	Remove(ctx context.Context, id string) error
	// Events blocks, calling fn for every workload-container event, until ctx
	// ends or the stream breaks.
	Events(ctx context.Context, fn func()) error
	Close() error
}

// Permanent says a create failed for a reason retrying will not fix (bad
// spec, refused by policy, image not pullable): the replica is Failed.
func Permanent(err error) bool {
	return errors.Is(err, agentclient.ErrInvalidArgument) || errors.Is(err, agentclient.ErrPolicy) ||
		errors.Is(err, agentclient.ErrFailedPrecondition)
}

// SessionName is the agent session all replicas of the scheduler share; it is
// persistent, so workload containers outlive any one scheduler process.
const SessionName = "shakedown-scheduler"

// Remote is an Agent over a signed agentclient connection.
type Remote struct {
	c       *agentclient.Client
	extra   map[string]string
	mu      sync.Mutex
	session string
}

// NewRemote wraps a dialled client; extra labels go on every container and
// on the session (e.g. a test run's id, so its harness can find and clean up).
func NewRemote(c *agentclient.Client, extra map[string]string) *Remote {
	return &Remote{c: c, extra: extra}
}

func (r *Remote) Close() error { return r.c.Close() }

func (r *Remote) Info(ctx context.Context) (Info, error) {
	ni, err := r.c.GetNodeInfo(ctx, &agentv1.GetNodeInfoRequest{})
	if err != nil {
		return Info{}, err
	}
	return Info{NanoCPUs: int64(ni.GetCpus()) * 1e9, Memory: ni.GetMemoryBytes()}, nil
}

func (r *Remote) Containers(ctx context.Context) ([]plan.Container, error) {
	resp, err := r.c.ListContainers(ctx, &agentv1.ListContainersRequest{
		LabelSelector: []string{labels.ManagedSelector}, All: true})
	if err != nil {
		return nil, err
	}
	var out []plan.Container
	for _, c := range resp.GetContainers() {
		id, err := labels.Parse(c.GetLabels())
		if err != nil {
			continue // not one of ours after all: never touch it
		}
		out = append(out, plan.Container{ID: c.GetId(), Node: c.GetNode(), WorkloadID: id.WorkloadID,
			Index: id.Index, Generation: id.Generation, State: state(c.GetState()),
			ExitCode: int(c.GetExitCode()), Created: c.GetCreatedAt().AsTime()})
	}
	return out, nil
}

func state(s agentv1.ContainerState) plan.State {
	switch s {
	case agentv1.ContainerState_CONTAINER_STATE_CREATED:
		return plan.StateCreated
	case agentv1.ContainerState_CONTAINER_STATE_RUNNING, agentv1.ContainerState_CONTAINER_STATE_PAUSED,
		agentv1.ContainerState_CONTAINER_STATE_RESTARTING:
		return plan.StateRunning
	case agentv1.ContainerState_CONTAINER_STATE_EXITED:
		return plan.StateExited
	case agentv1.ContainerState_CONTAINER_STATE_DEAD, agentv1.ContainerState_CONTAINER_STATE_REMOVING:
		return plan.StateDead
	}
	return plan.StateUnknown
}

func (r *Remote) sessionID(ctx context.Context, fresh bool) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.session != "" && !fresh {
		return r.session, nil
	}
	s, err := r.c.OpenSession(ctx, &agentv1.OpenSessionRequest{Name: SessionName, Persistent: true,
		Labels: labels.Merge(map[string]string{labels.Managed: "true"}, r.extra)})
	if err != nil {
		return "", fmt.Errorf("open session %s: %w", SessionName, err)
	}
	r.session = s.GetId()
	return r.session, nil
}

func (r *Remote) Create(ctx context.Context, req CreateRequest) (string, error) {
	spec := ContainerSpec(req)
	spec.Labels = labels.Merge(spec.Labels, r.extra)
	for attempt := 0; ; attempt++ {
		sid, err := r.sessionID(ctx, attempt > 0)
		if err != nil {
			return "", err
		}
		c, err := r.c.CreateContainer(ctx, &agentv1.CreateContainerRequest{SessionId: sid, Spec: spec, Start: true})
		if errors.Is(err, agentclient.ErrNotFound) && attempt == 0 {
			continue // the session was closed under us: open it again, once
		}
		if err != nil {
			return "", err
		}
		return c.GetId(), nil
	}
}

// ContainerSpec is the agent spec of one replica. The engine's own restart
// policy stays "no": restarting is the scheduler's job, and what is tested.
func ContainerSpec(req CreateRequest) *agentv1.ContainerSpec {
	s := req.Spec
	ports := make([]*agentv1.PortMapping, 0, len(s.GetPorts()))
	for _, p := range s.GetPorts() {
		ports = append(ports, &agentv1.PortMapping{ContainerPort: p.GetContainerPort(), HostPort: p.GetHostPort(),
			Protocol: p.GetProtocol(), HostIp: p.GetHostIp()})
	}
	return &agentv1.ContainerSpec{
		Name:          fmt.Sprintf("%s-%d-g%d-%s", s.GetName(), req.Index, req.Generation, suffix()),
		Image:         s.GetImage(),
		Command:       s.GetCommand(),
		Env:           s.GetEnv(),
		Labels:        labels.For(req.WorkloadID, s.GetName(), req.Index, req.Generation),
		Ports:         ports,
		Resources:     &agentv1.Resources{NanoCpus: s.GetResources().GetNanoCpus(), MemoryBytes: s.GetResources().GetMemoryBytes()},
		RestartPolicy: &agentv1.RestartPolicy{Name: "no"},
	}
}

// suffix keeps a replacement's name apart from a predecessor not yet gone.
func suffix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (r *Remote) Start(ctx context.Context, id string) error {
	_, err := r.c.StartContainer(ctx, &agentv1.StartContainerRequest{Container: id})
	return err
}

func (r *Remote) Remove(ctx context.Context, id string) error {
	_, err := r.c.RemoveContainer(ctx, &agentv1.RemoveContainerRequest{Container: id, Force: true})
	if errors.Is(err, agentclient.ErrNotFound) {
		return nil
	}
	return err
}

func (r *Remote) Events(ctx context.Context, fn func()) error {
	st, err := r.c.Events(ctx, &agentv1.EventsRequest{LabelSelector: []string{labels.ManagedSelector}})
	if err != nil {
		return err
	}
	for {
		if _, err := st.Recv(); err != nil {
			return err
		}
		fn()
	}
}
