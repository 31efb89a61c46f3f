// Package metrics is the scheduler's Prometheus instruments, on a registry of
// their own (no global state), served as /metrics with /healthz beside it.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds every instrument.
type Metrics struct {
	Registry       *prometheus.Registry
	ReconcileLoops *prometheus.CounterVec // result: ok, error
	ReconcileTime  prometheus.Histogram   // seconds per pass
	Actions        *prometheus.CounterVec // action: create/start/remove; result: ok/error
	Replicas       *prometheus.GaugeVec   // phase
	Workloads      *prometheus.GaugeVec   // phase: the worst of its replicas
	Nodes          *prometheus.GaugeVec   // health
	Leader         prometheus.Gauge       // 1 while this replica leads
	LeaderChanges  prometheus.Counter     // times this replica became leader
	PlantedBugs    *prometheus.GaugeVec   // bug: 1 for each planted bug enabled (package bugs)
}

// New registers everything on a fresh registry.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		ReconcileLoops: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scheduler_reconcile_loops_total",
			Help: "Reconciliation passes run by this replica while leader, by result."}, []string{"result"}),
		ReconcileTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "scheduler_reconcile_duration_seconds",
			Help: "Duration of one reconciliation pass.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}),
		Actions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scheduler_actions_total",
			Help: "Actions taken on agents, by action and result."}, []string{"action", "result"}),
		Replicas: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "scheduler_replicas",
			Help: "Replicas by phase, as of the last pass."}, []string{"phase"}),
		Workloads: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "scheduler_workloads",
			Help: "Workloads by phase (the least advanced of their replicas), as of the last pass."}, []string{"phase"}),
		Nodes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "scheduler_nodes",
			Help: "Known agents by health, as of the last pass."}, []string{"health"}),
		Leader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "scheduler_leader",
			Help: "1 while this replica is the leader, else 0."}),
		LeaderChanges: prometheus.NewCounter(prometheus.CounterOpts{Name: "scheduler_leader_elected_total",
			Help: "Times this replica was elected leader."}),
		PlantedBugs: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "scheduler_planted_bug",
			Help: "1 for each deliberately wrong behaviour this replica was started with (-bug); none in production."},
			[]string{"bug"}),
	}
	m.Registry.MustRegister(m.ReconcileLoops, m.ReconcileTime, m.Actions, m.Replicas, m.Workloads, m.Nodes,
		m.Leader, m.LeaderChanges, m.PlantedBugs, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves /metrics, and /healthz (200 "ok" while healthy() is nil).
func (m *Metrics) Handler(healthy func() error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := healthy(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}
