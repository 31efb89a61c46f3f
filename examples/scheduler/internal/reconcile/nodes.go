package reconcile

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/agents"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/plan"
	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/store"
)

// Dialer connects to the agent name registered at addr.
type Dialer func(ctx context.Context, name, addr string) (agents.Agent, error)

// node is one agent the scheduler knows: registered now, or until it has been
// gone for the node timeout.
type node struct {
	name, addr   string
	registered   bool
	agent        agents.Agent
	healthy      bool
	lastSeen     time.Time
	failingSince time.Time
	info         agents.Info
	lastErr      string
	events       context.CancelFunc // the Events subscription, while one runs
	eventsDone   chan struct{}
	eventsRetry  time.Time // a stream that broke is reopened no sooner than this
}

// EventsRetry spaces the reopening of an agent's Events stream that broke.
const EventsRetry = time.Second

// nodeTable is the set of agents, fed by discovery and by probes.
type nodeTable struct {
	mu    sync.Mutex
	nodes map[string]*node
	dial  Dialer
	log   *slog.Logger
}

// SetRegistered is discovery's latest answer: agent name -> address.
func (t *nodeTable) SetRegistered(now time.Time, reg map[string]string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for name, addr := range reg {
		n, ok := t.nodes[name]
		if !ok {
			n = &node{name: name, failingSince: now}
			t.nodes[name] = n
		}
		if n.addr != addr && n.agent != nil { // it moved: dial the new address
			t.drop(n)
		}
		n.addr, n.registered = addr, true
	}
	for name, n := range t.nodes {
		if _, ok := reg[name]; !ok && n.registered {
			if n.healthy || n.failingSince.IsZero() {
				n.failingSince = now
			}
			n.registered, n.healthy = false, false
			n.lastErr = "discovery record gone"
			t.drop(n)
		}
	}
}

// drop closes a node's connection and its events subscription (mu held).
func (t *nodeTable) drop(n *node) {
	if n.events != nil {
		n.events()
		n.events = nil
	}
	if n.agent != nil {
		_ = n.agent.Close()
		n.agent = nil
	}
}

type probe struct {
	n          *node
	agent      agents.Agent
	info       agents.Info
	containers []plan.Container
	err        error
}

// Probe asks every registered node for its capacity and its containers, at
// once, each within timeout; it updates health and forgets nodes gone longer
// than forget. It returns the containers of the nodes that answered.
func (t *nodeTable) Probe(ctx context.Context, now time.Time, timeout, forget time.Duration) []plan.Container {
	t.mu.Lock()
	var probes []*probe
	for name, n := range t.nodes {
		if !n.registered {
			if now.Sub(n.failingSince) >= forget {
				delete(t.nodes, name)
			}
			continue
		}
		probes = append(probes, &probe{n: n, agent: n.agent})
	}
	t.mu.Unlock()

	var wg sync.WaitGroup
	for _, p := range probes {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			if p.agent == nil {
				if p.agent, p.err = t.dial(pctx, p.n.name, p.n.addr); p.err != nil {
					return
				}
			}
			if p.info, p.err = p.agent.Info(pctx); p.err == nil {
				p.containers, p.err = p.agent.Containers(pctx)
			}
		})
	}
	wg.Wait()

	t.mu.Lock()
	defer t.mu.Unlock()
	var seen []plan.Container
	for _, p := range probes {
		n := p.n
		if t.nodes[n.name] != n || !n.registered { // deregistered while we asked
			if p.agent != nil && p.agent != n.agent {
				_ = p.agent.Close()
			}
			continue
		}
		if n.agent == nil {
			n.agent = p.agent
		}
		if p.err != nil {
			if n.healthy || n.failingSince.IsZero() {
				// Unreachable since it last answered: a pass may be long after that.
				n.failingSince = now
				if !n.lastSeen.IsZero() {
					n.failingSince = n.lastSeen
				}
				t.log.Warn("node unreachable", "node", n.name, "addr", n.addr, "error", p.err)
			}
			n.healthy, n.lastErr = false, p.err.Error()
			continue
		}
		if !n.healthy {
			t.log.Info("node healthy", "node", n.name, "addr", n.addr)
		}
		n.healthy, n.lastSeen, n.failingSince, n.lastErr, n.info = true, now, time.Time{}, "", p.info
		for _, c := range p.containers {
			c.Node = n.name // the node is whom we asked, whatever the label says
			seen = append(seen, c)
		}
	}
	return seen
}

// Plan is the node list for a decision.
func (t *nodeTable) Plan(now time.Time) []plan.Node {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]plan.Node, 0, len(t.nodes))
	for _, name := range slices.Sorted(maps.Keys(t.nodes)) {
		n := t.nodes[name]
		pn := plan.Node{Name: name, Healthy: n.healthy, NanoCPUs: n.info.NanoCPUs, Memory: n.info.Memory}
		if !n.healthy {
			pn.UnreachableFor = now.Sub(n.failingSince)
		}
		out = append(out, pn)
	}
	return out
}

// Status is the node table as stored for ListNodes.
func (t *nodeTable) Status() []store.NodeStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]store.NodeStatus, 0, len(t.nodes))
	for _, name := range slices.Sorted(maps.Keys(t.nodes)) {
		n := t.nodes[name]
		out = append(out, store.NodeStatus{Name: name, Address: n.addr, Healthy: n.healthy, Registered: n.registered,
			LastSeen: n.lastSeen, NanoCPUs: n.info.NanoCPUs, Memory: n.info.Memory, LastError: n.lastErr})
	}
	return out
}

// Agent is a healthy node's connection.
func (t *nodeTable) Agent(name string) agents.Agent {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n, ok := t.nodes[name]; ok && n.healthy {
		return n.agent
	}
	return nil
}

// Seed starts a term: what this replica has not seen itself is judged from the
// previous leader's table. A node unreachable now counts as unreachable since
// anyone last saw it, or since now when no one ever did, so a new leader
// neither moves replicas at once off a node it never reached nor waits longer
// than the timeout after the old leader lost it.
func (t *nodeTable) Seed(now time.Time, stored []store.NodeStatus) {
	t.mu.Lock()
	defer t.mu.Unlock()
	last := map[string]time.Time{}
	for _, s := range stored {
		last[s.Name] = s.LastSeen
	}
	for name, n := range t.nodes {
		if l := last[name]; l.After(n.lastSeen) {
			n.lastSeen = l
		}
		if !n.healthy {
			n.failingSince = now
			if !n.lastSeen.IsZero() {
				n.failingSince = n.lastSeen
			}
		}
	}
}

// Subscribe keeps one Events stream open per healthy node, calling trigger on
// every event; a broken stream is reopened by a later call.
func (t *nodeTable) Subscribe(ctx context.Context, trigger func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, n := range t.nodes {
		if n.eventsDone != nil {
			select {
			case <-n.eventsDone: // ended: reopen below, not in a hot loop
				n.events, n.eventsDone = nil, nil
				n.eventsRetry = time.Now().Add(EventsRetry)
			default:
			}
		}
		if !n.healthy || n.agent == nil || n.events != nil || time.Now().Before(n.eventsRetry) {
			continue
		}
		ectx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		n.events, n.eventsDone = cancel, done
		go func(a agents.Agent, name string) {
			defer close(done)
			if err := a.Events(ectx, trigger); err != nil && ectx.Err() == nil {
				t.log.Warn("events stream ended", "node", name, "error", err)
			}
			trigger() // what happened while it was down is found by the next pass
		}(n.agent, n.name)
	}
}

// Close ends every connection and subscription.
func (t *nodeTable) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, n := range t.nodes {
		t.drop(n)
	}
}
