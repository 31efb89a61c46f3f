package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	schedulerv1 "github.com/shakedown-dev/shakedown/go/gen/scheduler/v1"

	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/etcdtest"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/plan"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/store"
)

func spec(env string) *schedulerv1.WorkloadSpec {
	return &schedulerv1.WorkloadSpec{Name: "web", Image: "busybox", Replicas: 1, Env: map[string]string{"V": env}}
}

func TestConcurrentAppliesLoseNoUpdate(t *testing.T) {
	e := etcdtest.Start(t)
	// Separate clients: separate writers, as two scheduler replicas are.
	const writers = 8
	gens := make([]int64, writers)
	ids := make([]string, writers)
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		s := store.New(e.Client(t), e.Prefix)
		wg.Go(func() {
			rec, _, err := s.Apply(context.Background(), spec(fmt.Sprint(i)))
			gens[i], ids[i], errs[i] = rec.Generation, rec.ID, err
		})
	}
	wg.Wait()
	seen := map[int64]bool{}
	for i := range writers {
		if errs[i] != nil {
			t.Fatalf("writer %d: %v", i, errs[i])
		}
		if ids[i] != ids[0] {
			t.Fatalf("one name, two ids: %q and %q", ids[0], ids[i])
		}
		if seen[gens[i]] {
			t.Fatalf("generation %d returned twice: an update was lost (%v)", gens[i], gens)
		}
		seen[gens[i]] = true
	}
	rec, _, err := store.New(e.Client(t), e.Prefix).Get(context.Background(), ids[0])
	if err != nil || rec.Generation != writers {
		t.Fatalf("final generation %d (err %v), want %d", rec.Generation, err, writers)
	}
}

func TestApplySameSpecKeepsGenerationAndDeleteRemovesAll(t *testing.T) {
	e := etcdtest.Start(t)
	c := e.Client(t)
	s := store.New(c, e.Prefix)
	ctx := context.Background()
	a, created, err := s.Apply(ctx, spec("1"))
	if err != nil || !created || a.Generation != 1 {
		t.Fatalf("create: %+v %v %v", a, created, err)
	}
	b, created, err := s.Apply(ctx, spec("1"))
	if err != nil || created || b.Generation != 1 || b.ID != a.ID {
		t.Fatalf("same spec: %+v %v %v", b, created, err)
	}
	scaled := spec("1")
	scaled.Replicas = 3
	if c, _, err := s.Apply(ctx, scaled); err != nil || c.Generation != 2 || c.Template != 1 {
		t.Fatalf("scaling changed the template: %+v %v", c, err)
	}
	if c, _, err := s.Apply(ctx, spec("new")); err != nil || c.Generation != 3 || c.Template != 3 {
		t.Fatalf("a new env did not change the template: %+v %v", c, err)
	}
	if id, err := s.Resolve(ctx, "", "web"); err != nil || id != a.ID {
		t.Fatalf("resolve: %q %v", id, err)
	}
	var fe *store.FieldError
	if _, _, err := s.Apply(ctx, &schedulerv1.WorkloadSpec{Name: "web", Image: "x"}); !errors.As(err, &fe) || fe.Field != "spec.replicas" {
		t.Fatalf("replicas 0: %v", err)
	}
	if err := s.Delete(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get(ctx, a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	left, err := c.Get(ctx, e.Prefix+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || left.Count != 0 {
		t.Fatalf("keys left after delete: %d (%v)", left.Count, err)
	}
	// The name is free again: a new workload, a new id.
	d, created, err := s.Apply(ctx, spec("2"))
	if err != nil || !created || d.ID == a.ID {
		t.Fatalf("recreate: %+v %v %v", d, created, err)
	}
}

func TestStatusWritesNeedLeadership(t *testing.T) {
	e := etcdtest.Start(t)
	ctx := context.Background()
	c := e.Client(t)
	s := store.New(c, e.Prefix)
	rec, _, err := s.Apply(ctx, spec("1"))
	if err != nil {
		t.Fatal(err)
	}
	guard := func() (clientv3.Cmp, *concurrency.Session) {
		sess, err := concurrency.NewSession(e.Client(t), concurrency.WithTTL(2))
		if err != nil {
			t.Fatal(err)
		}
		el := concurrency.NewElection(sess, s.ElectionPrefix())
		if err := el.Campaign(ctx, "x"); err != nil {
			t.Fatal(err)
		}
		return clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", el.Rev()), sess
	}
	g1, s1 := guard()
	reps := []plan.Replica{{Index: 0, Phase: schedulerv1.Phase_PHASE_RUNNING, Node: "n1"}}
	if err := s.WriteStatus(ctx, g1, rec.ID, reps); err != nil {
		t.Fatalf("leader's write: %v", err)
	}
	_ = s1.Close() // steps down: its key is gone
	g2, s2 := guard()
	defer s2.Close()
	if err := s.WriteStatus(ctx, g1, rec.ID, nil); !errors.Is(err, store.ErrNotLeader) {
		t.Fatalf("deposed leader's write: %v", err)
	}
	if err := s.WriteNodes(ctx, g1, nil); !errors.Is(err, store.ErrNotLeader) {
		t.Fatalf("deposed leader's node write: %v", err)
	}
	if err := s.WriteStatus(ctx, g2, rec.ID, reps); err != nil {
		t.Fatalf("new leader's write: %v", err)
	}
	_, got, err := s.Get(ctx, rec.ID)
	if err != nil || len(got) != 1 || got[0].Node != "n1" {
		t.Fatalf("status %+v %v", got, err)
	}
}

// PutRecord is the write of the planted bug blind-write: against a real etcd
// it overwrites a newer acknowledged update and brings back a deleted workload,
// which the revision-checked Apply and Delete never do.
func TestPlantedBlindWriteOverwritesNewerAndRestoresDeleted(t *testing.T) {
	e := etcdtest.Start(t)
	s := store.New(e.Client(t), e.Prefix)
	ctx := context.Background()
	old, _, err := s.Apply(ctx, spec("1"))
	if err != nil {
		t.Fatal(err)
	}
	scaled := spec("1")
	scaled.Replicas = 3
	if _, _, err := s.Apply(ctx, scaled); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRecord(ctx, old); err != nil {
		t.Fatal(err)
	}
	got, _, err := s.Get(ctx, old.ID)
	if err != nil || got.Spec.GetReplicas() != 1 || got.Generation != 1 {
		t.Fatalf("after the blind write: %+v %v; want the acknowledged scale to 3 overwritten", got, err)
	}
	if err := s.Delete(ctx, old.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRecord(ctx, old); err != nil {
		t.Fatal(err)
	}
	if id, err := s.Resolve(ctx, "", "web"); err != nil || id != old.ID {
		t.Fatalf("after delete and a blind write: %q %v; want the workload back", id, err)
	}
}
