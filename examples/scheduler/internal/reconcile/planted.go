package reconcile

// The planted bugs that live in the loop (package bugs names them): each is
// inert unless its name is in Config.Bugs. They are written as the mistakes
// they imitate would be, so a fuzzer finds them the way it would find those.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/bugs"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/plan"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/store"
)

// Term runs the loop for one term of leadership: until lctx (the term) ends.
// With the planted bug dual-leader, the loop runs on ctx (the process)
// instead: past the end of the term it goes on reconciling, from the desired
// state it last read, beside the new leader, until this replica's next term.
func (r *Reconciler) Term(ctx, lctx context.Context, guard clientv3.Cmp) error {
	if !r.cfg.Bugs.Has(bugs.DualLeader) {
		return r.Run(lctx, guard)
	}
	return r.term.run(ctx, lctx, func(zctx context.Context) error {
		err := r.Run(zctx, guard)
		r.log.Info("reconciler stopped", "error", err)
		return err
	}, r.log)
}

// zombie is the dual-leader loop that outlives its term.
type zombie struct {
	mu    sync.Mutex
	stop  func() // ends the previous term's loop and waits for it
	state *zombieState
}

func (z *zombie) run(ctx, lctx context.Context, loop func(context.Context) error, log *slog.Logger) error {
	z.mu.Lock()
	if z.stop != nil {
		z.stop() // elected again: the loop of our last term stops only now
	}
	z.state.frozen.Store(false)
	zctx, cancel := context.WithCancel(ctx) // PLANTED BUG: not the term's context
	done := make(chan struct{})
	z.stop = func() { cancel(); <-done }
	z.mu.Unlock()
	go func() {
		defer close(done)
		_ = loop(zctx)
	}()
	<-lctx.Done()
	if ctx.Err() == nil {
		z.state.frozen.Store(true)
		log.Warn("PLANTED BUG dual-leader: leadership ended; reconciling on from the last desired state read",
			"bug", bugs.DualLeader)
	}
	return lctx.Err()
}

// zombieState is what a deposed leader that does not know it was deposed
// reads and writes: the desired state its term's watch last fed it (frozen at
// the end of the term), and guarded writes whose refusal it ignores.
type zombieState struct {
	State
	frozen atomic.Bool
	mu     sync.Mutex
	have   bool
	recs   []store.Record
	status map[string][]plan.Replica
	rev    int64
}

func (z *zombieState) List(ctx context.Context) ([]store.Record, map[string][]plan.Replica, int64, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if !z.frozen.Load() || !z.have {
		recs, status, rev, err := z.State.List(ctx)
		if err != nil {
			return nil, nil, 0, err
		}
		z.recs, z.status, z.rev, z.have = recs, status, rev, true
	}
	st := map[string][]plan.Replica{}
	for id, reps := range z.status {
		st[id] = append([]plan.Replica(nil), reps...)
	}
	return append([]store.Record(nil), z.recs...), st, z.rev, nil
}

func (z *zombieState) WriteStatus(ctx context.Context, guard clientv3.Cmp, id string, reps []plan.Replica) error {
	return ignoreDeposed(z.State.WriteStatus(ctx, guard, id, reps))
}

func (z *zombieState) WriteNodes(ctx context.Context, guard clientv3.Cmp, nodes []store.NodeStatus) error {
	return ignoreDeposed(z.State.WriteNodes(ctx, guard, nodes))
}

// ignoreDeposed: PLANTED BUG dual-leader, a refused guarded write is not
// taken as the news that someone else leads.
func ignoreDeposed(err error) error {
	if errors.Is(err, store.ErrNotLeader) {
		return nil
	}
	return err
}

// cache keeps, with the planted bug blind-write, one record per workload and
// template generation: refreshed only when the template changes, as if it
// were only needed to create containers from.
func (r *Reconciler) cache(recs []store.Record) {
	if !r.cfg.Bugs.Has(bugs.BlindWrite) {
		return
	}
	seen := map[string]bool{}
	for _, rec := range recs {
		seen[rec.ID] = true
		if c, ok := r.cached[rec.ID]; !ok || c.Template != rec.Template {
			r.cached[rec.ID] = rec
		}
	}
	maps.DeleteFunc(r.cached, func(id string, _ store.Record) bool { return !seen[id] })
}

// writeBack, with the planted bug blind-write, puts the cached record back
// after a status change, with no revision check: a newer acknowledged change
// of replicas or restart policy is overwritten, and a workload deleted while
// the pass ran comes back.
func (r *Reconciler) writeBack(ctx context.Context, id string) error {
	rec, ok := r.cached[id]
	if !r.cfg.Bugs.Has(bugs.BlindWrite) || !ok {
		return nil
	}
	if err := r.state.PutRecord(ctx, rec); err != nil {
		return fmt.Errorf("write back %s: %w", id, err)
	}
	return nil
}
