// Command scheduler is the reference scheduler under test: a replicated gRPC
// service (scheduler.v1.Scheduler) that keeps workloads running on Shakedown
// agents. Flags and layout: README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/shakedown-dev/shakedown/go/agentclient"
	schedulerv1 "github.com/shakedown-dev/shakedown/go/gen/scheduler/v1"

	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/agents"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/bugs"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/discovery"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/labels"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/leader"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/metrics"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/reconcile"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/server"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/store"
)

type config struct {
	listen, advertise, certs, cert, key, clientCert, clientKey, ca, principals, crl, keys, principal string
	etcd, etcdPrefix, domain, name, metricsAddr, portFile, metricsPortFile                           string
	interval, nodeTimeout                                                                            time.Duration
	leaseTTL                                                                                         int
	labels                                                                                           map[string]string
	bugs                                                                                             bugs.Set
}

// labelFlag is a repeatable -label KEY=VALUE.
type labelFlag map[string]string

func (l labelFlag) String() string { return fmt.Sprint(map[string]string(l)) }

func (l labelFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("%q: want KEY=VALUE", v)
	}
	if err := labels.CheckExtra(k); err != nil {
		return err
	}
	l[k] = val
	return nil
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("scheduler", flag.ContinueOnError)
	fs.StringVar(&c.listen, "listen", "127.0.0.1:7450", "gRPC address (mutual TLS)")
	fs.StringVar(&c.advertise, "advertise", "", "host:port to register in discovery (default: -listen, with its actual port)")
	fs.StringVar(&c.certs, "certs", "", "PKI directory from `shakedown certs init` (required)")
	fs.StringVar(&c.cert, "cert", "", "serving certificate (default DIR/agent-NAME.crt)")
	fs.StringVar(&c.key, "key", "", "its key (default DIR/agent-NAME.key)")
	fs.StringVar(&c.clientCert, "client-cert", "", "certificate to call agents with (default DIR/client-PRINCIPAL.crt)")
	fs.StringVar(&c.clientKey, "client-key", "", "its key (default DIR/client-PRINCIPAL.key)")
	fs.StringVar(&c.ca, "ca", "", "CA certificate (default DIR/ca.crt)")
	fs.StringVar(&c.principals, "principals", "", "allow-list {principal: role} (default DIR/principals.json)")
	fs.StringVar(&c.crl, "crl", "", "revocation list, checked when present (default DIR/crl.pem)")
	fs.StringVar(&c.keys, "keys", "", "HMAC keyring to sign agent calls (default DIR/keys.json)")
	fs.StringVar(&c.principal, "principal", "scheduler", "whose certificate and key call the agents")
	fs.StringVar(&c.etcd, "etcd", "http://127.0.0.1:2379", "etcd endpoints, comma-separated")
	fs.StringVar(&c.etcdPrefix, "etcd-prefix", store.DefaultPrefix, "key prefix of the scheduler's state")
	fs.StringVar(&c.domain, "domain", "shakedown.test", "discovery domain (agents' and ours)")
	fs.StringVar(&c.name, "name", "", "this replica's name, unique (default: the host name)")
	fs.DurationVar(&c.interval, "reconcile-interval", 5*time.Second, "reconcile at least this often")
	fs.DurationVar(&c.nodeTimeout, "node-timeout", 30*time.Second, "move replicas off a node unreachable this long")
	fs.StringVar(&c.metricsAddr, "metrics", "127.0.0.1:9464", "plain-HTTP /metrics and /healthz address (loopback only)")
	fs.IntVar(&c.leaseTTL, "lease-ttl", 10, "seconds of the etcd lease behind the record and the candidacy")
	fs.StringVar(&c.portFile, "port-file", "", "write the bound gRPC port here once serving")
	fs.StringVar(&c.metricsPortFile, "metrics-port-file", "", "write the bound -metrics port here once serving")
	c.labels = map[string]string{}
	fs.Var(labelFlag(c.labels), "label", "KEY=VALUE on every workload container and the agent session (repeatable)")
	c.bugs = bugs.Set{}
	fs.Var(c.bugs, "bug", "enable a planted bug, for testing the testers: "+strings.Join(c.bugs.Known(), ", ")+
		" (repeatable; also $"+bugs.EnvVar+"=a,b); never in production")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if err := c.bugs.AddList(os.Getenv(bugs.EnvVar)); err != nil {
		return c, fmt.Errorf("$%s: %w", bugs.EnvVar, err)
	}
	if c.name == "" {
		h, _ := os.Hostname()
		c.name = strings.Split(h, ".")[0]
	}
	if err := discovery.CheckLabel("-name", c.name); err != nil {
		return c, err
	}
	if c.certs == "" && (c.cert == "" || c.key == "" || c.ca == "" || c.principals == "" || c.keys == "" || c.clientCert == "" || c.clientKey == "") {
		return c, errors.New("-certs: required unless every file is given on its own")
	}
	def := func(v *string, name string) {
		if *v == "" {
			*v = filepath.Join(c.certs, name)
		}
	}
	def(&c.cert, "agent-"+c.name+".crt")
	def(&c.key, "agent-"+c.name+".key")
	def(&c.clientCert, "client-"+c.principal+".crt")
	def(&c.clientKey, "client-"+c.principal+".key")
	def(&c.ca, "ca.crt")
	def(&c.principals, "principals.json")
	def(&c.crl, "crl.pem")
	def(&c.keys, "keys.json")
	switch {
	case c.interval <= 0:
		return c, errors.New("-reconcile-interval: must be positive")
	case c.nodeTimeout <= 0:
		return c, errors.New("-node-timeout: must be positive")
	case c.leaseTTL < 2:
		return c, fmt.Errorf("-lease-ttl %d: etcd leases need at least 2 s", c.leaseTTL)
	}
	host, _, err := net.SplitHostPort(c.metricsAddr)
	if ip := net.ParseIP(host); err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
		return c, fmt.Errorf("-metrics %q: must be a loopback host:port (it is plain HTTP)", c.metricsAddr)
	}
	return c, nil
}

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "scheduler:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		fmt.Fprintln(os.Stderr, "scheduler:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config, log *slog.Logger) error {
	tlsCfg, err := server.TLSConfig(cfg.ca, cfg.cert, cfg.key, cfg.crl)
	if err != nil {
		return err
	}
	allow, err := server.LoadAllowList(cfg.principals)
	if err != nil {
		return err
	}
	// Fail now, naming the option, rather than at the first agent.
	if _, err := agentclient.TLSConfig("agent:1", agentOptions(cfg, "agent")); err != nil {
		return fmt.Errorf("agent client: %w", err)
	}
	etcd, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(cfg.etcd, ","), DialTimeout: 5 * time.Second,
		Logger: zap.NewNop()})
	if err != nil {
		return fmt.Errorf("-etcd: %w", err)
	}
	defer etcd.Close()

	lis, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("-listen: %w", err)
	}
	advHost, advPort, err := advertised(cfg.advertise, cfg.listen, lis.Addr().(*net.TCPAddr).Port)
	if err != nil {
		return err
	}
	mlis, err := net.Listen("tcp", cfg.metricsAddr)
	if err != nil {
		return fmt.Errorf("-metrics: %w", err)
	}

	m := metrics.New()
	for _, b := range cfg.bugs.Names() { // loudly: a run with a planted bug must never pass for a real one
		log.Warn("PLANTED BUG ENABLED: "+b+": "+bugs.Known[b], "bug", b)
		m.PlantedBugs.WithLabelValues(b).Set(1)
	}
	st := store.New(etcd, cfg.etcdPrefix)
	rec := reconcile.New(reconcile.Config{Interval: cfg.interval, NodeTimeout: cfg.nodeTimeout, Bugs: cfg.bugs}, st,
		func(ctx context.Context, name, addr string) (agents.Agent, error) {
			c, err := agentclient.Dial(ctx, addr, agentOptions(cfg, name))
			if err != nil {
				return nil, err
			}
			return agents.NewRemote(c, cfg.labels), nil
		}, m, log)
	el, err := leader.New(leader.Config{Client: etcd, Prefix: st.ElectionPrefix(), Name: cfg.name, TTL: cfg.leaseTTL,
		Metrics: m, Log: log,
		Register: func(ctx context.Context, lease clientv3.LeaseID) error {
			key, err := discovery.Register(ctx, etcd, lease, cfg.leaseTTL, discovery.SchedulerService, cfg.domain, cfg.name, advHost, advPort)
			if err == nil {
				log.Info("registered in discovery", "key", key)
			}
			return err
		}})
	if err != nil {
		return err
	}

	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.ChainUnaryInterceptor((&server.Auth{List: allow}).Unary),
		grpc.ChainStreamInterceptor((&server.Auth{List: allow}).Stream))
	schedulerv1.RegisterSchedulerServer(gs, &server.Service{Store: st, Etcd: etcd, Leader: el.Leader, Log: log})
	hs := health.NewServer()
	hs.SetServingStatus(schedulerv1.Scheduler_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)

	hsrv := &http.Server{Handler: m.Handler(func() error {
		hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := etcd.Get(hctx, st.ElectionPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return fmt.Errorf("etcd: %w", err)
		}
		return nil
	}), ReadHeaderTimeout: 5 * time.Second}

	errc := make(chan error, 2)
	go func() { errc <- gs.Serve(lis) }()
	go func() {
		if err := hsrv.Serve(mlis); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	go watchAgents(ctx, etcd, cfg.domain, rec, log)
	done := make(chan struct{})
	go func() {
		defer close(done)
		el.Run(ctx, func(lctx context.Context, guard clientv3.Cmp) {
			go func() { // act on writes at once, not at the next tick
				for lctx.Err() == nil {
					if err := st.WatchDesired(lctx, rec.Trigger); lctx.Err() == nil {
						log.Warn("desired-state watch ended; again", "error", err)
						time.Sleep(time.Second)
					}
				}
			}()
			err := rec.Term(ctx, lctx, guard)
			log.Info("reconciler stopped", "error", err)
		})
	}()
	for _, pf := range []struct {
		flag, path string
		l          net.Listener
	}{{"-port-file", cfg.portFile, lis}, {"-metrics-port-file", cfg.metricsPortFile, mlis}} {
		if pf.path == "" {
			continue
		}
		// Written whole under a temporary name, then renamed: a reader never sees half.
		tmp := pf.path + ".tmp"
		if err := os.WriteFile(tmp, []byte(strconv.Itoa(pf.l.Addr().(*net.TCPAddr).Port)+"\n"), 0o644); err != nil {
			return fmt.Errorf("%s: %w", pf.flag, err)
		}
		if err := os.Rename(tmp, pf.path); err != nil {
			return fmt.Errorf("%s: %w", pf.flag, err)
		}
	}
	log.Info("serving", "listen", lis.Addr().String(), "metrics", mlis.Addr().String(), "name", cfg.name,
		"advertise", net.JoinHostPort(advHost, strconv.Itoa(advPort)))

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	hs.Shutdown()
	select {
	case <-done: // revoked the lease: the record and the candidacy went with it
	case <-time.After(time.Duration(cfg.leaseTTL+3) * time.Second):
		log.Warn("etcd unreachable at shutdown; the lease will expire on its own")
	}
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		gs.Stop() // streams (WatchWorkloads) end only with their clients
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = hsrv.Shutdown(sctx)
	return err
}

func agentOptions(cfg config, name string) agentclient.Options {
	return agentclient.Options{CA: cfg.ca, Cert: cfg.clientCert, Key: cfg.clientKey, Keyring: cfg.keys,
		Principal: cfg.principal, ServerName: name, Audience: name}
}

// advertised is the address to register: -advertise, else the -listen host
// with the bound port; an unspecified host (0.0.0.0, ::) cannot be dialled.
func advertised(adv, listen string, port int) (string, int, error) {
	if adv != "" {
		h, p, err := net.SplitHostPort(adv)
		n, perr := strconv.Atoi(p)
		if err != nil || perr != nil || h == "" || n < 1 || n > 65535 {
			return "", 0, fmt.Errorf("-advertise %q: want host:port", adv)
		}
		return h, n, nil
	}
	h, _, _ := net.SplitHostPort(listen)
	if ip := net.ParseIP(h); h == "" || (ip != nil && ip.IsUnspecified()) {
		return "", 0, fmt.Errorf("-listen %q has no dialable host: give -advertise", listen)
	}
	return h, port, nil
}

// watchAgents feeds the reconciler the agents registered in discovery, and
// keeps watching, starting over after an error.
func watchAgents(ctx context.Context, c *clientv3.Client, domain string, rec *reconcile.Reconciler, log *slog.Logger) {
	for ctx.Err() == nil {
		err := discovery.Watch(ctx, c, discovery.AgentService, domain, func(recs map[string]discovery.Record, bad []string) {
			reg := map[string]string{}
			for name, r := range recs {
				reg[name] = r.Address()
			}
			if len(bad) > 0 {
				log.Warn("unusable agent records skipped", "keys", bad)
			}
			rec.SetAgents(reg)
		})
		if ctx.Err() == nil {
			log.Warn("agent discovery watch ended; again", "error", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}
