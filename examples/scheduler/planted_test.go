package main

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/agents"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/bugs"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/etcdtest"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/leader"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/metrics"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/reconcile"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/store"
)

// The planted bug dual-leader against a real etcd: replica a leads, its lease is revoked
// (what a pause past the TTL does), b is elected; a's loop goes on only with the bug.
func TestPlantedDualLeaderOutlivesItsLease(t *testing.T) {
	for _, planted := range []bool{false, true} {
		e := etcdtest.Start(t)
		c := e.Client(t)
		st := store.New(c, e.Prefix)
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		set := bugs.Set{}
		if planted {
			set[bugs.DualLeader] = true
		}
		m := metrics.New()
		rec := reconcile.New(reconcile.Config{Interval: 50 * time.Millisecond, Bugs: set}, st,
			func(context.Context, string, string) (agents.Agent, error) { panic("no agents here") }, m, log)
		leaders := make(chan string, 8)
		elect := func(name string, lead func(ctx, lctx context.Context, guard clientv3.Cmp)) {
			el, err := leader.New(leader.Config{Client: e.Client(t), Prefix: st.ElectionPrefix(), Name: name, TTL: 2,
				Metrics: metrics.New(), Log: log, Register: func(context.Context, clientv3.LeaseID) error { return nil }})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel)
			go el.Run(ctx, func(lctx context.Context, guard clientv3.Cmp) { leaders <- name; lead(ctx, lctx, guard) })
		}
		termEnded := make(chan struct{}, 1)
		elect("a", func(ctx, lctx context.Context, guard clientv3.Cmp) {
			_ = rec.Term(ctx, lctx, guard)
			termEnded <- struct{}{}
		})
		if got := <-leaders; got != "a" {
			t.Fatalf("first leader %q", got)
		}
		elect("b", func(_, lctx context.Context, _ clientv3.Cmp) { <-lctx.Done() })
		passes := func() float64 { // scheduler_reconcile_loops_total, any result
			fams, err := m.Registry.Gather()
			if err != nil {
				t.Fatal(err)
			}
			n := 0.0
			for _, f := range fams {
				if f.GetName() == "scheduler_reconcile_loops_total" {
					for _, mm := range f.GetMetric() {
						n += mm.GetCounter().GetValue()
					}
				}
			}
			return n
		}
		poll(t, func() bool { return passes() >= 2 }, "a's passes")
		poll(t, func() bool {
			r, err := c.Get(context.Background(), st.ElectionPrefix()+"/", clientv3.WithPrefix())
			return err == nil && len(r.Kvs) == 2
		}, "b's candidacy")

		// a's lease ends behind its back.
		r, err := c.Get(context.Background(), st.ElectionPrefix()+"/", clientv3.WithFirstCreate()...)
		if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "a" {
			t.Fatalf("a's candidacy: %v %v", r, err)
		}
		if _, err := c.Revoke(context.Background(), clientv3.LeaseID(r.Kvs[0].Lease)); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-leaders:
			if got != "b" {
				t.Fatalf("after a's lease ended the leader is %q", got)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("b was not elected")
		}
		select { // by default the loop has returned with it, its last pass counted
		case <-termEnded:
		case <-time.After(15 * time.Second):
			t.Fatal("a's term did not end")
		}
		before := passes()
		if planted {
			poll(t, func() bool { return passes() >= before+3 }, "the deposed leader's passes")
			continue
		}
		// Proving an absence takes a window: 10 reconcile intervals without a pass.
		time.Sleep(500 * time.Millisecond)
		if after := passes(); after != before {
			t.Fatalf("default: the deposed leader ran %v more passes", after-before)
		}
	}
}
