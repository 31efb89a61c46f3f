package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"

	schedulerv1 "github.com/shakedown-dev/shakedown/go/gen/scheduler/v1"

	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/bugs"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/discovery"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/etcdtest"
)

// pki makes a PKI directory with the project's own `shakedown certs init`,
// so the -certs defaults are tested against the real layout.
func pki(t *testing.T) string {
	t.Helper()
	cli, _ := filepath.Abs("../../.venv/bin/shakedown")
	if _, err := os.Stat(cli); err != nil {
		if os.Getenv("SHAKEDOWN_REQUIRE_INTEROP") == "1" {
			t.Fatalf("no %s: run scripts/setup.sh", cli)
		}
		t.Skipf("no %s (run scripts/setup.sh)", cli)
	}
	dir := t.TempDir()
	for _, args := range [][]string{
		{"certs", "init", dir, "--agent", "s1=127.0.0.1", "--agent", "s2=127.0.0.1",
			"--principal", "admin1:admin", "--principal", "watcher:observer", "--principal", "stranger:observer",
			"--principal", "revoked1:observer",
			"--principal", "scheduler:admin"},
		{"keys", "init", filepath.Join(dir, "keys.json"), "--principal", "scheduler"},
	} {
		if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
			t.Fatalf("shakedown %v: %v\n%s", args, err, out)
		}
	}
	// "stranger" keeps a valid certificate but leaves the allow-list.
	path := filepath.Join(dir, "principals.json")
	data, _ := os.ReadFile(path)
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	delete(doc["principals"].(map[string]any), "stranger")
	data, _ = json.Marshal(doc)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

type replica struct {
	name, addr, metrics string
	stop                func()
}

func startReplica(t *testing.T, certs string, e *etcdtest.Etcd, domain, name string, extra ...string) *replica {
	t.Helper()
	dir := t.TempDir()
	portFile, metricsPortFile := filepath.Join(dir, "port"), filepath.Join(dir, "metrics-port")
	cfg, err := parseFlags(append([]string{"-listen", "127.0.0.1:0", "-certs", certs, "-name", name, "-etcd", e.Endpoint,
		"-etcd-prefix", e.Prefix, "-domain", domain, "-lease-ttl", "2", "-reconcile-interval", "200ms",
		"-metrics", "127.0.0.1:0", "-port-file", portFile, "-metrics-port-file", metricsPortFile}, extra...))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	r := &replica{name: name}
	var once bool
	r.stop = func() {
		if once {
			return
		}
		once = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: run: %v", name, err)
		}
	}
	t.Cleanup(r.stop)
	poll(t, func() bool {
		b, err := os.ReadFile(portFile)
		m, merr := os.ReadFile(metricsPortFile)
		if err == nil && merr == nil {
			r.addr = "127.0.0.1:" + strings.TrimSpace(string(b))
			r.metrics = "127.0.0.1:" + strings.TrimSpace(string(m))
			return true
		}
		select {
		case err := <-done:
			t.Fatalf("%s exited: %v", name, err)
		default:
		}
		return false
	}, name+" serving")
	return r
}

func dial(t *testing.T, certs, principal, server, addr string) *grpc.ClientConn {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(filepath.Join(certs, "client-"+principal+".crt"), filepath.Join(certs, "client-"+principal+".key"))
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := os.ReadFile(filepath.Join(certs, "ca.crt"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{pair}, RootCAs: pool, ServerName: server, MinVersion: tls.VersionTLS12})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func poll(t *testing.T, ok func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func code(err error) codes.Code { return status.Code(err) }

func TestTwoReplicasServeElectAndHandOver(t *testing.T) {
	certs := pki(t)
	e := etcdtest.Start(t)
	domain := strings.TrimPrefix(e.Prefix, "/shakedown-scheduler-test-") + ".shakedown.test"
	path, _ := discovery.ServicePath(discovery.SchedulerService, domain)
	ec := e.Client(t)
	t.Cleanup(func() { _, _ = ec.Delete(context.Background(), path+"/", clientv3.WithPrefix()) })
	ctx := context.Background()

	s1 := startReplica(t, certs, e, domain, "s1")
	s2 := startReplica(t, certs, e, domain, "s2")
	admin1 := schedulerv1.NewSchedulerClient(dial(t, certs, "admin1", "s1", s1.addr))
	admin2 := schedulerv1.NewSchedulerClient(dial(t, certs, "admin1", "s2", s2.addr))
	var leader string
	poll(t, func() bool {
		r, err := admin2.ListNodes(ctx, &schedulerv1.ListNodesRequest{})
		leader = r.GetLeader()
		return err == nil && leader != ""
	}, "a leader")
	records, err := ec.Get(ctx, path+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || records.Count != 2 {
		t.Fatalf("%d scheduler records under %s, want 2 (%v)", records.Count, path, err)
	}

	// Writes on one replica, read on the other; the same spec keeps its generation.
	spec := &schedulerv1.WorkloadSpec{Name: "web", Image: "busybox", Command: []string{"sleep", "3600"}, Replicas: 2}
	a, err := admin1.ApplyWorkload(ctx, &schedulerv1.ApplyWorkloadRequest{Spec: spec})
	if err != nil || !a.GetCreated() || a.GetGeneration() != 1 || len(a.GetId()) != 12 {
		t.Fatalf("apply: %v %v", a, err)
	}
	b, err := admin2.ApplyWorkload(ctx, &schedulerv1.ApplyWorkloadRequest{Spec: spec})
	if err != nil || b.GetCreated() || b.GetGeneration() != 1 || b.GetId() != a.GetId() {
		t.Fatalf("apply again: %v %v", b, err)
	}
	var trailer metadata.MD
	_, err = admin1.ApplyWorkload(ctx, &schedulerv1.ApplyWorkloadRequest{Spec: &schedulerv1.WorkloadSpec{Name: "x", Image: "busybox"}}, grpc.Trailer(&trailer))
	if code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "spec.replicas") || trailer.Get("x-shakedown-field")[0] != "spec.replicas" {
		t.Fatalf("replicas 0: %v (trailer %v)", err, trailer)
	}

	// No agent is registered: the leader reports why the replicas wait.
	poll(t, func() bool {
		w, err := admin2.GetWorkload(ctx, &schedulerv1.GetWorkloadRequest{Name: "web"})
		return err == nil && len(w.GetReplicas()) == 2 && w.GetReplicas()[1].GetReason() == "no healthy node" &&
			w.GetReplicas()[1].GetPhase() == schedulerv1.Phase_PHASE_PENDING
	}, "the leader's status")

	// Agents are learned from their discovery records: one nobody answers for is unreachable.
	agents, _ := discovery.ServicePath(discovery.AgentService, domain)
	t.Cleanup(func() { _, _ = ec.Delete(context.Background(), agents+"/", clientv3.WithPrefix()) })
	if _, err := ec.Put(ctx, agents+"/ghost", fmt.Sprintf(`{"host":"127.0.0.1","port":%d,"priority":10,"weight":10,"ttl":10}`, etcdtest.FreePort(t))); err != nil {
		t.Fatal(err)
	}
	var ghost *schedulerv1.Node
	poll(t, func() bool {
		r, err := admin1.ListNodes(ctx, &schedulerv1.ListNodesRequest{})
		if err != nil || len(r.GetNodes()) != 1 {
			return false
		}
		ghost = r.GetNodes()[0]
		return ghost.GetLastError() != ""
	}, "the registered agent in ListNodes")
	if ghost.GetName() != "ghost" || ghost.GetHealth() != schedulerv1.NodeHealth_NODE_HEALTH_UNREACHABLE || !ghost.GetRegistered() || ghost.GetLastSeen() != nil {
		t.Fatalf("ghost: %v", ghost)
	}
	if _, err := ec.Delete(ctx, agents+"/ghost"); err != nil {
		t.Fatal(err)
	}
	poll(t, func() bool {
		r, err := admin1.ListNodes(ctx, &schedulerv1.ListNodesRequest{})
		return err == nil && len(r.GetNodes()) == 1 && !r.GetNodes()[0].GetRegistered()
	}, "the deregistered agent listed as such")

	// Roles: observers read, strangers (valid certificate, not listed) get nothing.
	watcher := schedulerv1.NewSchedulerClient(dial(t, certs, "watcher", "s1", s1.addr))
	if _, err := watcher.GetWorkload(ctx, &schedulerv1.GetWorkloadRequest{Id: a.GetId()}); err != nil {
		t.Fatalf("observer get: %v", err)
	}
	if _, err := watcher.ApplyWorkload(ctx, &schedulerv1.ApplyWorkloadRequest{Spec: spec}); code(err) != codes.PermissionDenied {
		t.Fatalf("observer apply: %v", err)
	}
	if _, err := watcher.DeleteWorkload(ctx, &schedulerv1.DeleteWorkloadRequest{Id: a.GetId()}); code(err) != codes.PermissionDenied {
		t.Fatalf("observer delete: %v", err)
	}
	strangerConn := dial(t, certs, "stranger", "s1", s1.addr)
	if _, err := schedulerv1.NewSchedulerClient(strangerConn).ListWorkloads(ctx, &schedulerv1.ListWorkloadsRequest{}); code(err) != codes.PermissionDenied {
		t.Fatalf("stranger list: %v", err)
	}
	if _, err := healthpb.NewHealthClient(strangerConn).Check(ctx, &healthpb.HealthCheckRequest{}); code(err) != codes.PermissionDenied {
		t.Fatalf("stranger health: %v", err)
	}

	// Revoked while we serve: the CRL is re-read, the handshake refused.
	revoked := schedulerv1.NewSchedulerClient(dial(t, certs, "revoked1", "s1", s1.addr))
	if _, err := revoked.ListWorkloads(ctx, &schedulerv1.ListWorkloadsRequest{}); err != nil {
		t.Fatalf("revoked1 before revocation: %v", err)
	}
	cli, _ := filepath.Abs("../../.venv/bin/shakedown")
	if out, err := exec.Command(cli, "certs", "revoke", certs, "revoked1").CombinedOutput(); err != nil {
		t.Fatalf("certs revoke: %v\n%s", err, out)
	}
	late := schedulerv1.NewSchedulerClient(dial(t, certs, "revoked1", "s1", s1.addr)) // a new connection
	if _, err := late.ListWorkloads(ctx, &schedulerv1.ListWorkloadsRequest{}); code(err) != codes.Unavailable {
		t.Fatalf("revoked certificate: %v, want the handshake refused", err)
	}
	if _, err := watcher.ListWorkloads(ctx, &schedulerv1.ListWorkloadsRequest{}); err != nil {
		t.Fatalf("a certificate not revoked: %v", err)
	}

	// Health and reflection, for any listed principal.
	wconn := dial(t, certs, "watcher", "s2", s2.addr)
	hc, err := healthpb.NewHealthClient(wconn).Check(ctx, &healthpb.HealthCheckRequest{Service: "scheduler.v1.Scheduler"})
	if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", hc, err)
	}
	rs, err := reflectionpb.NewServerReflectionClient(wconn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
	rr, err := rs.Recv()
	if err != nil || !strings.Contains(fmt.Sprint(rr.GetListServicesResponse().GetService()), "scheduler.v1.Scheduler") {
		t.Fatalf("reflection: %v %v", rr, err)
	}
	ra, err := reflectionv1alpha.NewServerReflectionClient(wconn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = ra.Send(&reflectionv1alpha.ServerReflectionRequest{MessageRequest: &reflectionv1alpha.ServerReflectionRequest_ListServices{}})
	if rr, err := ra.Recv(); err != nil || !strings.Contains(fmt.Sprint(rr.GetListServicesResponse().GetService()), "scheduler.v1.Scheduler") {
		t.Fatalf("reflection v1alpha: %v %v", rr, err)
	}

	// Watch: a snapshot, then the update.
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second) // a missing event fails, not hangs
	defer wcancel()
	ws, err := watcher.WatchWorkloads(wctx, &schedulerv1.WatchWorkloadsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := ws.Recv()
	if err != nil || ev.GetType() != schedulerv1.WorkloadEvent_TYPE_SNAPSHOT || ev.GetWorkload().GetId() != a.GetId() {
		t.Fatalf("first event: %v %v", ev, err)
	}
	spec.Replicas = 3
	if u, err := admin1.ApplyWorkload(ctx, &schedulerv1.ApplyWorkloadRequest{Spec: spec}); err != nil || u.GetGeneration() != 2 {
		t.Fatalf("update: %v %v", u, err)
	}
	for {
		ev, err := ws.Recv()
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		if ev.GetType() == schedulerv1.WorkloadEvent_TYPE_PUT && ev.GetWorkload().GetGeneration() == 2 {
			break
		}
	}

	// Metrics on the leader.
	lead, other := s1, s2
	if leader == "s2" {
		lead, other = s2, s1
	}
	body := get(t, "http://"+lead.metrics+"/metrics")
	for _, want := range []string{"scheduler_leader 1", "scheduler_reconcile_loops_total{result=\"ok\"}", "scheduler_reconcile_duration_seconds_bucket", `scheduler_replicas{phase="pending"}`} {
		if !strings.Contains(body, want) {
			t.Fatalf("leader's /metrics lacks %q", want)
		}
	}
	if body := get(t, "http://"+other.metrics+"/metrics"); !strings.Contains(body, "scheduler_leader 0") {
		t.Fatal("follower's /metrics does not say scheduler_leader 0")
	}
	if body := get(t, "http://"+lead.metrics+"/healthz"); body != "ok\n" {
		t.Fatalf("/healthz: %q", body)
	}

	// The leader stops: the other takes over, and its record is the only one.
	lead.stop()
	otherClient := admin2
	if other == s1 {
		otherClient = admin1
	}
	poll(t, func() bool {
		r, err := otherClient.ListNodes(ctx, &schedulerv1.ListNodesRequest{})
		return err == nil && r.GetLeader() == other.name
	}, "the other replica to lead")
	poll(t, func() bool {
		r, err := ec.Get(ctx, path+"/", clientv3.WithPrefix())
		return err == nil && len(r.Kvs) == 1 && strings.HasSuffix(string(r.Kvs[0].Key), "/"+other.name)
	}, "only the survivor's record")
	if _, err := otherClient.DeleteWorkload(ctx, &schedulerv1.DeleteWorkloadRequest{Name: "web"}); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := otherClient.GetWorkload(ctx, &schedulerv1.GetWorkloadRequest{Id: a.GetId()}); code(err) != codes.NotFound {
		t.Fatalf("get after delete: %v", err)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

func TestFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-name", "s1"}, "-certs"},
		{[]string{"-certs", "d", "-name", "bad name"}, "-name"},
		{[]string{"-certs", "d", "-name", "s1", "-metrics", "0.0.0.0:9464"}, "-metrics"},
		{[]string{"-certs", "d", "-name", "s1", "-lease-ttl", "1"}, "-lease-ttl"},
		{[]string{"-certs", "d", "-name", "s1", "-node-timeout", "0s"}, "-node-timeout"},
	} {
		_, err := parseFlags(c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error naming %s", c.args, err, c.want)
		}
	}
	cfg, err := parseFlags([]string{"-certs", "d", "-name", "s1"})
	if err != nil || cfg.cert != filepath.Join("d", "agent-s1.crt") || cfg.clientCert != filepath.Join("d", "client-scheduler.crt") {
		t.Fatalf("defaults: %+v %v", cfg, err)
	}
	if len(cfg.bugs) != 0 {
		t.Fatalf("planted bugs on by default: %v", cfg.bugs)
	}
}

func TestPlantedBugFlags(t *testing.T) {
	t.Setenv(bugs.EnvVar, "blind-write,")
	cfg, err := parseFlags([]string{"-certs", "d", "-name", "s1", "-bug", "dual-leader", "-bug", "skip-orphan-gc"})
	if err != nil || cfg.bugs.String() != "blind-write,dual-leader,skip-orphan-gc" {
		t.Fatalf("-bug and $%s: %v %v", bugs.EnvVar, cfg.bugs, err)
	}
	if _, err := parseFlags([]string{"-certs", "d", "-name", "s1", "-bug", "nope"}); err == nil ||
		!strings.Contains(err.Error(), "-bug") || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("unknown -bug: %v", err)
	}
	t.Setenv(bugs.EnvVar, "nope")
	if _, err := parseFlags([]string{"-certs", "d", "-name", "s1"}); err == nil || !strings.Contains(err.Error(), bugs.EnvVar) {
		t.Fatalf("unknown bug in $%s: %v", bugs.EnvVar, err)
	}
	if _, _, err := advertised("", "0.0.0.0:7450", 7450); err == nil || !strings.Contains(err.Error(), "-advertise") {
		t.Fatalf("unspecified listen host: %v", err)
	}
	if h, p, err := advertised("", "127.0.0.1:0", 4242); err != nil || h != "127.0.0.1" || p != 4242 {
		t.Fatalf("advertised: %s %d %v", h, p, err)
	}
}

func TestPlantedBugsAreReportedInMetrics(t *testing.T) {
	certs := pki(t)
	e := etcdtest.Start(t)
	domain := strings.TrimPrefix(e.Prefix, "/shakedown-scheduler-test-") + ".shakedown.test"
	path, _ := discovery.ServicePath(discovery.SchedulerService, domain)
	ec := e.Client(t)
	t.Cleanup(func() { _, _ = ec.Delete(context.Background(), path+"/", clientv3.WithPrefix()) })
	s1 := startReplica(t, certs, e, domain, "s1", "-bug", bugs.BlindWrite)
	body := get(t, "http://"+s1.metrics+"/metrics")
	if !strings.Contains(body, `scheduler_planted_bug{bug="blind-write"} 1`) || strings.Contains(body, `bug="dual-leader"`) {
		t.Fatalf("/metrics does not report exactly the planted bug:\n%s", grepLines(body, "planted"))
	}
}

func grepLines(text, word string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, word) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
