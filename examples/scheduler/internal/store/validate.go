package store

import (
	"fmt"
	"regexp"
	"strings"

	"google.golang.org/protobuf/proto"

	schedulerv1 "github.com/shakedown-dev/shakedown/go/gen/scheduler/v1"
)

// MaxReplicas bounds a workload: a typo must not ask for a million containers.
const MaxReplicas = 1000

// MaxSpecBytes keeps a spec well inside etcd's request limit (1.5 MiB).
const MaxSpecBytes = 256 << 10

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// FieldError is bad input, naming the field.
type FieldError struct{ Field, Problem string }

func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }

func bad(field, format string, args ...any) error {
	return &FieldError{field, fmt.Sprintf(format, args...)}
}

// Validate checks a spec before it is stored.
func Validate(s *schedulerv1.WorkloadSpec) error {
	if s == nil {
		return bad("spec", "required")
	}
	if n := proto.Size(s); n > MaxSpecBytes {
		return bad("spec", "%d bytes: at most %d", n, MaxSpecBytes)
	}
	if !dnsLabel.MatchString(s.GetName()) {
		return bad("spec.name", "%q must be a DNS label: lower-case letters, digits and '-', at most 63", s.GetName())
	}
	if strings.TrimSpace(s.GetImage()) == "" {
		return bad("spec.image", "required")
	}
	if r := s.GetReplicas(); r < 1 || r > MaxReplicas {
		return bad("spec.replicas", "%d: must be 1-%d", r, MaxReplicas)
	}
	if _, ok := schedulerv1.RestartPolicy_name[int32(s.GetRestartPolicy())]; !ok {
		return bad("spec.restart_policy", "%d: unknown", s.GetRestartPolicy())
	}
	if res := s.GetResources(); res.GetNanoCpus() < 0 || res.GetMemoryBytes() < 0 {
		return bad("spec.resources", "must not be negative")
	}
	for k := range s.GetEnv() {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return bad("spec.env", "key %q: must be non-empty, without '=' or NUL", k)
		}
	}
	for i, p := range s.GetPorts() {
		f := fmt.Sprintf("spec.ports[%d]", i)
		if p.GetContainerPort() < 1 || p.GetContainerPort() > 65535 {
			return bad(f+".container_port", "%d: must be 1-65535", p.GetContainerPort())
		}
		if p.GetHostPort() > 65535 {
			return bad(f+".host_port", "%d: must be 0-65535", p.GetHostPort())
		}
		switch p.GetProtocol() {
		case "", "tcp", "udp", "sctp":
		default:
			return bad(f+".protocol", "%q: use tcp, udp or sctp", p.GetProtocol())
		}
	}
	if s.GetReplicas() > 1 {
		for i, p := range s.GetPorts() {
			if p.GetHostPort() != 0 {
				// Two replicas on one node would collide; spread cannot promise otherwise.
				return bad(fmt.Sprintf("spec.ports[%d].host_port", i), "a fixed host port needs replicas = 1 (use 0 for an engine-chosen port)")
			}
		}
	}
	return nil
}
