// Package leader keeps one etcd lease per term: the scheduler's discovery
// record lives on it, and so does its candidacy in the election. While the
// lease lives the replica is discoverable and may lead; when it ends (the
// process died, or etcd was unreachable past the TTL) both go, and another
// replica takes over within the TTL.
package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/metrics"
)

// Config is one replica's part in the election.
type Config struct {
	Client *clientv3.Client
	Prefix string // the election's key prefix
	Name   string // this replica, the value of its candidacy
	TTL    int    // lease seconds
	// Register puts the discovery record on the term's lease.
	Register func(ctx context.Context, lease clientv3.LeaseID) error
	Metrics  *metrics.Metrics
	Log      *slog.Logger
}

// Elector runs terms until its context ends.
type Elector struct {
	cfg     Config
	leading atomic.Bool
}

// New checks cfg.
func New(cfg Config) (*Elector, error) {
	if cfg.TTL < 2 {
		return nil, fmt.Errorf("-lease-ttl %d: etcd leases need at least 2 s", cfg.TTL)
	}
	return &Elector{cfg: cfg}, nil
}

// Leading says whether this replica leads now.
func (e *Elector) Leading() bool { return e.leading.Load() }

// Leader is the name of the current leader ("" during an election), read
// from etcd, so any replica can tell.
func (e *Elector) Leader(ctx context.Context) string {
	resp, err := e.cfg.Client.Get(ctx, e.cfg.Prefix+"/", clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) == 0 {
		return ""
	}
	return string(resp.Kvs[0].Value)
}

// Run holds terms one after another; lead runs while this replica leads, with
// a context that ends when leadership does and the comparison that guards
// its writes (our candidacy key still holds the revision that won).
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context, guard clientv3.Cmp)) {
	for ctx.Err() == nil {
		err := e.term(ctx, lead)
		if ctx.Err() != nil {
			return
		}
		e.cfg.Log.Warn("term ended; starting another", "error", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (e *Elector) term(ctx context.Context, lead func(context.Context, clientv3.Cmp)) error {
	// Not tied to ctx: Close must still revoke the lease after ctx ends, so a
	// clean shutdown removes the record and the candidacy at once.
	sess, err := concurrency.NewSession(e.cfg.Client, concurrency.WithTTL(e.cfg.TTL))
	if err != nil {
		return fmt.Errorf("lease: %w", err)
	}
	defer sess.Close()
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sess.Done(): // lease lost: the record and the candidacy are gone
			cancel()
		case <-tctx.Done():
		}
	}()
	if err := e.cfg.Register(tctx, sess.Lease()); err != nil {
		return fmt.Errorf("register: %w", err)
	}
	el := concurrency.NewElection(sess, e.cfg.Prefix)
	if err := el.Campaign(tctx, e.cfg.Name); err != nil {
		return fmt.Errorf("campaign: %w", err)
	}
	guard := clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", el.Rev())
	e.leading.Store(true)
	e.cfg.Metrics.Leader.Set(1)
	e.cfg.Metrics.LeaderChanges.Inc()
	e.cfg.Log.Info("elected leader", "name", e.cfg.Name, "lease", fmt.Sprintf("%x", sess.Lease()))
	lead(tctx, guard)
	e.leading.Store(false)
	e.cfg.Metrics.Leader.Set(0)
	e.cfg.Log.Info("leadership ended", "name", e.cfg.Name)
	select {
	case <-sess.Done():
		return errors.New("lease lost")
	default:
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer rcancel()
	_ = el.Resign(rctx)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.New("a guarded write found another leader")
}
