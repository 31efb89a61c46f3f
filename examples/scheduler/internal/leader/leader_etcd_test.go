package leader_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/discovery"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/etcdtest"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/leader"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/metrics"
)

const ttl = 2

func TestLeaderCrashHandsOverWithinTheTTLAndItsRecordGoes(t *testing.T) {
	e := etcdtest.Start(t)
	domain := strings.TrimPrefix(e.Prefix, "/shakedown-scheduler-test-") + ".shakedown.test"
	path, err := discovery.ServicePath(discovery.SchedulerService, domain)
	if err != nil {
		t.Fatal(err)
	}
	watch := e.Client(t)
	t.Cleanup(func() { _, _ = watch.Delete(context.Background(), path+"/", clientv3.WithPrefix()) })

	leaders := make(chan string, 4)
	start := func(name string, c *clientv3.Client) (*leader.Elector, context.CancelFunc) {
		el, err := leader.New(leader.Config{Client: c, Prefix: e.Prefix + "/election", Name: name, TTL: ttl,
			Metrics: metrics.New(), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Register: func(ctx context.Context, lease clientv3.LeaseID) error {
				_, err := discovery.Register(ctx, c, lease, ttl, discovery.SchedulerService, domain, name, "127.0.0.1", 7450)
				return err
			}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		go el.Run(ctx, func(lctx context.Context, _ clientv3.Cmp) {
			leaders <- name
			<-lctx.Done()
		})
		t.Cleanup(cancel)
		return el, cancel
	}
	ca := etcdtest.ClientNoCleanup(t, e)
	a, _ := start("a", ca)
	if got := waitLeader(t, leaders); got != "a" {
		t.Fatalf("first leader %q", got)
	}
	b, _ := start("b", e.Client(t))
	waitFor(t, func() bool { return count(t, watch, path) == 2 }, "both records")
	if !a.Leading() || b.Leading() || b.Leader(context.Background()) != "a" {
		t.Fatalf("a leading %v, b leading %v, b sees %q", a.Leading(), b.Leading(), b.Leader(context.Background()))
	}
	rec, err := watch.Get(context.Background(), path+"/a")
	if err != nil || len(rec.Kvs) != 1 || rec.Kvs[0].Lease == 0 {
		t.Fatalf("a's record at %s/a: %v %v", path, rec, err)
	}
	var r discovery.Record
	if err := json.Unmarshal(rec.Kvs[0].Value, &r); err != nil || r.Host != "127.0.0.1" || r.Port != 7450 || r.TTL != ttl {
		t.Fatalf("record %s: %+v %v", rec.Kvs[0].Value, r, err)
	}

	// A crash: the client goes without revoking anything; only the TTL ends a's lease.
	crashed := time.Now()
	_ = ca.Close()
	if got := waitLeader(t, leaders); got != "b" {
		t.Fatalf("after the crash the leader is %q", got)
	}
	// etcd expires leases on a 500 ms tick; the rest is slack for a loaded machine.
	if took := time.Since(crashed); took > ttl*time.Second+2500*time.Millisecond {
		t.Fatalf("handover took %s, lease TTL %ds", took, ttl)
	}
	waitFor(t, func() bool { return count(t, watch, path) == 1 }, "a's record gone")
	if got := b.Leader(context.Background()); got != "b" {
		t.Fatalf("leader read as %q", got)
	}
}

func TestCleanStopRevokesAtOnce(t *testing.T) {
	e := etcdtest.Start(t)
	leaders := make(chan string, 4)
	mk := func(name string) context.CancelFunc {
		el, err := leader.New(leader.Config{Client: e.Client(t), Prefix: e.Prefix + "/election", Name: name, TTL: 30,
			Metrics: metrics.New(), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Register: func(context.Context, clientv3.LeaseID) error { return nil }})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			el.Run(ctx, func(lctx context.Context, _ clientv3.Cmp) { leaders <- name; <-lctx.Done() })
		}()
		t.Cleanup(func() { cancel(); <-done })
		return func() { cancel(); <-done }
	}
	stopA := mk("a")
	waitLeader(t, leaders)
	mk("b")
	stopped := time.Now()
	stopA()
	if got := waitLeader(t, leaders); got != "b" {
		t.Fatalf("leader %q", got)
	}
	if took := time.Since(stopped); took > 5*time.Second {
		t.Fatalf("a clean stop took %s to hand over (lease TTL 30 s): not revoked", took)
	}
}

func count(t *testing.T, c *clientv3.Client, path string) int64 {
	r, err := c.Get(context.Background(), path+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return r.Count
}

func waitLeader(t *testing.T, ch chan string) string {
	t.Helper()
	select {
	case n := <-ch:
		return n
	case <-time.After(15 * time.Second):
		t.Fatal("no leader elected")
	}
	return ""
}

func waitFor(t *testing.T, ok func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
