// Package discovery speaks the SkyDNS layout CoreDNS's etcd plugin serves,
// as shakedown/skydns.py and shakedown/registry.py write it:
// instance._service._tcp.example.com lives at
// /skydns/com/example/_tcp/_service/instance, its value JSON
// {"host":...,"port":...,"priority":10,"weight":10,"ttl":...}.
package discovery

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	Prefix = "/skydns"
	// AgentService is what agents register as (agent/registration.py).
	AgentService = "shakedown-agent"
	// SchedulerService is what the scheduler registers as.
	SchedulerService = "scheduler"
)

var label = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$`)

// CheckLabel is skydns.check_label: one DNS label.
func CheckLabel(kind, s string) error {
	if !label.MatchString(s) {
		return fmt.Errorf("%s %q: must be a DNS label (letters, digits, '-', '_')", kind, s)
	}
	return nil
}

// ServicePath is /skydns/<reversed domain>/_tcp/_<service>.
func ServicePath(service, domain string) (string, error) {
	d := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(domain), "."))
	if d == "" {
		return "", fmt.Errorf("domain: must not be empty")
	}
	labels := strings.Split(d, ".")
	for _, l := range labels {
		if err := CheckLabel("domain label", l); err != nil {
			return "", err
		}
	}
	if err := CheckLabel("service", service); err != nil {
		return "", err
	}
	slices.Reverse(labels)
	return Prefix + "/" + strings.Join(labels, "/") + "/_tcp/_" + service, nil
}

// Record is one SkyDNS value.
type Record struct {
	Host     string `json:"host"`
	Port     int    `json:"port,omitempty"`
	Priority int    `json:"priority"`
	Weight   int    `json:"weight"`
	TTL      int    `json:"ttl,omitempty"`
}

// Address is host:port.
func (r Record) Address() string { return net.JoinHostPort(r.Host, strconv.Itoa(r.Port)) }

// Register puts instance's record on lease: when the lease ends (the process
// died, or lost etcd for longer than the TTL) the record goes with it. The
// DNS TTL is the lease TTL, so no resolver caches it past that.
func Register(ctx context.Context, c *clientv3.Client, lease clientv3.LeaseID, ttl int, service, domain, instance, host string, port int) (string, error) {
	path, err := ServicePath(service, domain)
	if err != nil {
		return "", err
	}
	if err := CheckLabel("instance", instance); err != nil {
		return "", err
	}
	if host == "" || port < 1 || port > 65535 {
		return "", fmt.Errorf("advertised address %q:%d: needs a host and a port 1-65535", host, port)
	}
	val, _ := json.Marshal(Record{Host: host, Port: port, Priority: 10, Weight: 10, TTL: ttl})
	key := path + "/" + instance
	if _, err := c.Put(ctx, key, string(val), clientv3.WithLease(lease)); err != nil {
		return "", err
	}
	return key, nil
}

// parse reads the records under path: instance -> record.
// Values that do not parse are skipped (and reported in bad).
func parse(path string, kvs map[string][]byte) (map[string]Record, []string) {
	out, bad := map[string]Record{}, []string(nil)
	for k, v := range kvs {
		inst := strings.TrimPrefix(k, path+"/")
		var r Record
		if strings.Contains(inst, "/") || json.Unmarshal(v, &r) != nil || r.Host == "" || r.Port < 1 || r.Port > 65535 {
			bad = append(bad, k)
			continue
		}
		out[inst] = r
	}
	return out, bad
}

// Watch calls fn with the full set of service's instances now and after every
// change, until ctx ends or the watch fails (then it returns the error, and the
// caller starts over).
func Watch(ctx context.Context, c *clientv3.Client, service, domain string, fn func(map[string]Record, []string)) error {
	path, err := ServicePath(service, domain)
	if err != nil {
		return err
	}
	got, err := c.Get(ctx, path+"/", clientv3.WithPrefix())
	if err != nil {
		return err
	}
	kvs := map[string][]byte{}
	for _, kv := range got.Kvs {
		kvs[string(kv.Key)] = kv.Value
	}
	fn(parse(path, kvs))
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range c.Watch(wctx, path+"/", clientv3.WithPrefix(), clientv3.WithRev(got.Header.Revision+1)) {
		if err := resp.Err(); err != nil {
			return err
		}
		for _, ev := range resp.Events {
			if ev.Type == clientv3.EventTypeDelete {
				delete(kvs, string(ev.Kv.Key))
			} else {
				kvs[string(ev.Kv.Key)] = ev.Kv.Value
			}
		}
		fn(parse(path, kvs))
	}
	return ctx.Err()
}
