// Package server is the scheduler.v1.Scheduler gRPC service: any replica
// serves reads and accepts writes (both go straight to etcd), behind mutual
// TLS and the allow-list (auth.go).
package server

import (
	"context"
	"errors"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	schedulerv1 "github.com/shakedown-dev/shakedown/go/gen/scheduler/v1"

	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/plan"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/store"
)

// FieldMetadata is the trailer naming a bad field, as the agent sends it.
const FieldMetadata = "x-shakedown-field"

// Service implements scheduler.v1.Scheduler.
type Service struct {
	schedulerv1.UnimplementedSchedulerServer
	Store  *store.Store
	Etcd   *clientv3.Client
	Leader func(ctx context.Context) string // the leader's name, "" when none
	Log    *slog.Logger
}

// StoreTimeout bounds the state-store calls of one request: with etcd frozen or
// gone, the caller gets a clear UNAVAILABLE in seconds, not its own deadline.
const StoreTimeout = 3 * time.Second

// rpcError maps an internal error to a status, naming the field when bad input.
// ctx is the request's own context (not the store call's, which StoreTimeout bounds).
func rpcError(ctx context.Context, err error) error {
	var fe *store.FieldError
	switch {
	case (errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded) &&
		ctx.Err() == nil:
		return status.Errorf(codes.Unavailable,
			"state store (etcd) did not answer within %s: it is unavailable", StoreTimeout)
	case errors.As(err, &fe):
		_ = grpc.SetTrailer(ctx, metadata.Pairs(FieldMetadata, fe.Field))
		return status.Error(codes.InvalidArgument, fe.Error())
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, store.ErrConflict):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	return status.Errorf(codes.Unavailable, "state store: %v", err)
}

func (s *Service) ApplyWorkload(ctx context.Context, req *schedulerv1.ApplyWorkloadRequest) (*schedulerv1.ApplyWorkloadResponse, error) {
	sctx, cancel := context.WithTimeout(ctx, StoreTimeout)
	defer cancel()
	rec, created, err := s.Store.Apply(sctx, req.GetSpec())
	if err != nil {
		return nil, rpcError(ctx, err)
	}
	s.Log.Info("workload applied", "id", rec.ID, "name", rec.Spec.GetName(), "generation", rec.Generation,
		"created", created, "principal", Principal(ctx))
	return &schedulerv1.ApplyWorkloadResponse{Id: rec.ID, Generation: rec.Generation, Created: created}, nil
}

func (s *Service) GetWorkload(ctx context.Context, req *schedulerv1.GetWorkloadRequest) (*schedulerv1.Workload, error) {
	sctx, cancel := context.WithTimeout(ctx, StoreTimeout)
	defer cancel()
	id, err := s.Store.Resolve(sctx, req.GetId(), req.GetName())
	if err != nil {
		return nil, rpcError(ctx, err)
	}
	rec, reps, err := s.Store.Get(sctx, id)
	if err != nil {
		return nil, rpcError(ctx, err)
	}
	return ToProto(rec, reps), nil
}

func (s *Service) ListWorkloads(ctx context.Context, _ *schedulerv1.ListWorkloadsRequest) (*schedulerv1.ListWorkloadsResponse, error) {
	sctx, cancel := context.WithTimeout(ctx, StoreTimeout)
	defer cancel()
	recs, statuses, _, err := s.Store.List(sctx)
	if err != nil {
		return nil, rpcError(ctx, err)
	}
	out := &schedulerv1.ListWorkloadsResponse{}
	for _, r := range recs {
		out.Workloads = append(out.Workloads, ToProto(r, statuses[r.ID]))
	}
	return out, nil
}

func (s *Service) DeleteWorkload(ctx context.Context, req *schedulerv1.DeleteWorkloadRequest) (*schedulerv1.DeleteWorkloadResponse, error) {
	sctx, cancel := context.WithTimeout(ctx, StoreTimeout)
	defer cancel()
	id, err := s.Store.Resolve(sctx, req.GetId(), req.GetName())
	if err != nil {
		return nil, rpcError(ctx, err)
	}
	if err := s.Store.Delete(sctx, id); err != nil {
		return nil, rpcError(ctx, err)
	}
	s.Log.Info("workload deleted", "id", id, "principal", Principal(ctx))
	return &schedulerv1.DeleteWorkloadResponse{Id: id}, nil
}

func (s *Service) ListNodes(ctx context.Context, _ *schedulerv1.ListNodesRequest) (*schedulerv1.ListNodesResponse, error) {
	sctx, cancel := context.WithTimeout(ctx, StoreTimeout)
	defer cancel()
	nodes, err := s.Store.Nodes(sctx)
	if err != nil {
		return nil, rpcError(ctx, err)
	}
	out := &schedulerv1.ListNodesResponse{Leader: s.Leader(sctx)}
	for _, n := range nodes {
		pn := &schedulerv1.Node{Name: n.Name, Address: n.Address, Health: schedulerv1.NodeHealth_NODE_HEALTH_UNREACHABLE,
			Cpus: int32(n.NanoCPUs / 1e9), MemoryBytes: n.Memory, LastError: n.LastError, Registered: n.Registered}
		if n.Healthy {
			pn.Health = schedulerv1.NodeHealth_NODE_HEALTH_HEALTHY
		}
		if !n.LastSeen.IsZero() {
			pn.LastSeen = timestamppb.New(n.LastSeen)
		}
		out.Nodes = append(out.Nodes, pn)
	}
	return out, nil
}

// WatchWorkloads sends a snapshot, then every change from the revision after it.
func (s *Service) WatchWorkloads(_ *schedulerv1.WatchWorkloadsRequest, st grpc.ServerStreamingServer[schedulerv1.WorkloadEvent]) error {
	ctx := st.Context()
	recs, statuses, rev, err := s.Store.List(ctx)
	if err != nil {
		return rpcError(ctx, err)
	}
	for _, r := range recs {
		if err := st.Send(&schedulerv1.WorkloadEvent{Type: schedulerv1.WorkloadEvent_TYPE_SNAPSHOT, Workload: ToProto(r, statuses[r.ID])}); err != nil {
			return err
		}
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range s.Etcd.Watch(wctx, s.Store.Prefix(), clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := resp.Err(); err != nil {
			return status.Errorf(codes.Unavailable, "watch: %v", err)
		}
		if err := s.forward(ctx, st, resp.Events); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	return status.Error(codes.Unavailable, "watch ended; watch again")
}

func (s *Service) forward(ctx context.Context, st grpc.ServerStreamingServer[schedulerv1.WorkloadEvent], evs []*clientv3.Event) error {
	sent := map[string]bool{} // one event per workload per batch
	for _, ev := range evs {
		id := s.Store.IDFromKey(string(ev.Kv.Key))
		if id == "" || sent[id] {
			continue
		}
		sent[id] = true
		var out *schedulerv1.WorkloadEvent
		if ev.Type == clientv3.EventTypeDelete {
			out = &schedulerv1.WorkloadEvent{Type: schedulerv1.WorkloadEvent_TYPE_DELETED, Workload: &schedulerv1.Workload{Id: id}}
		} else {
			rec, reps, err := s.Store.Get(ctx, id)
			if errors.Is(err, store.ErrNotFound) {
				continue // deleted since: its delete event follows
			} else if err != nil {
				return rpcError(ctx, err)
			}
			out = &schedulerv1.WorkloadEvent{Type: schedulerv1.WorkloadEvent_TYPE_PUT, Workload: ToProto(rec, reps)}
		}
		if err := st.Send(out); err != nil {
			return err
		}
	}
	return nil
}

// ToProto renders a workload with one status per wanted replica: a replica
// the leader has not seen yet is Pending.
func ToProto(r store.Record, reps []plan.Replica) *schedulerv1.Workload {
	w := &schedulerv1.Workload{Id: r.ID, Spec: r.Spec, Generation: r.Generation,
		CreatedAt: timestamppb.New(r.CreatedAt), UpdatedAt: timestamppb.New(r.UpdatedAt)}
	for i := range int(r.Spec.GetReplicas()) {
		rs := &schedulerv1.ReplicaStatus{Index: int32(i), Phase: schedulerv1.Phase_PHASE_PENDING,
			Reason: "not yet seen by the leader"}
		if i < len(reps) {
			p := reps[i]
			rs = &schedulerv1.ReplicaStatus{Index: int32(i), Phase: p.Phase, Node: p.Node, ContainerId: p.ContainerID,
				Restarts: int32(p.Restarts), LastError: p.LastError, ObservedGeneration: p.ObservedGeneration, Reason: p.Reason}
			if !p.UpdatedAt.IsZero() {
				rs.UpdatedAt = timestamppb.New(p.UpdatedAt)
			}
		}
		w.Replicas = append(w.Replicas, rs)
	}
	return w
}
