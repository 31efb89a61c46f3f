package store

import (
	"errors"
	"strings"
	"testing"

	schedulerv1 "github.com/shakedown-dev/shakedown/go/gen/scheduler/v1"
)

func TestValidateNamesTheField(t *testing.T) {
	ok := func() *schedulerv1.WorkloadSpec {
		return &schedulerv1.WorkloadSpec{Name: "web", Image: "busybox", Replicas: 1}
	}
	if err := Validate(ok()); err != nil {
		t.Fatal(err)
	}
	for field, mutate := range map[string]func(*schedulerv1.WorkloadSpec){
		"spec.name":              func(s *schedulerv1.WorkloadSpec) { s.Name = "Web_1" },
		"spec":                   func(s *schedulerv1.WorkloadSpec) { s.Env = map[string]string{"BIG": strings.Repeat("x", MaxSpecBytes)} },
		"spec.image":             func(s *schedulerv1.WorkloadSpec) { s.Image = " " },
		"spec.replicas":          func(s *schedulerv1.WorkloadSpec) { s.Replicas = 0 },
		"spec.restart_policy":    func(s *schedulerv1.WorkloadSpec) { s.RestartPolicy = 9 },
		"spec.resources":         func(s *schedulerv1.WorkloadSpec) { s.Resources = &schedulerv1.Resources{MemoryBytes: -1} },
		"spec.env":               func(s *schedulerv1.WorkloadSpec) { s.Env = map[string]string{"A=B": "x"} },
		"spec.ports[0].protocol": func(s *schedulerv1.WorkloadSpec) { s.Ports = []*schedulerv1.Port{{ContainerPort: 1, Protocol: "icmp"}} },
		"spec.ports[0].host_port": func(s *schedulerv1.WorkloadSpec) {
			s.Replicas = 2
			s.Ports = []*schedulerv1.Port{{ContainerPort: 1, HostPort: 80}}
		},
	} {
		s := ok()
		mutate(s)
		var fe *FieldError
		if err := Validate(s); !errors.As(err, &fe) || fe.Field != field {
			t.Errorf("%s: got %v", field, err)
		}
	}
}
