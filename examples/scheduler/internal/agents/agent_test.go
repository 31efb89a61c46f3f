package agents

import (
	"testing"

	schedulerv1 "github.com/shakedown-dev/shakedown/go/gen/scheduler/v1"

	"github.com/shakedown-dev/shakedown/examples/scheduler/internal/labels"
)

func TestContainerSpec(t *testing.T) {
	s := ContainerSpec(CreateRequest{WorkloadID: "0123456789ab", Index: 1, Generation: 3, Spec: &schedulerv1.WorkloadSpec{
		Name: "web", Image: "busybox", Command: []string{"sleep", "1"}, Env: map[string]string{"A": "1"},
		Ports: []*schedulerv1.Port{{ContainerPort: 80}}, Resources: &schedulerv1.Resources{NanoCpus: 5e8, MemoryBytes: 1 << 20},
		Replicas: 2, RestartPolicy: schedulerv1.RestartPolicy_RESTART_POLICY_ALWAYS}})
	id, err := labels.Parse(s.GetLabels())
	if err != nil || id != (labels.Identity{WorkloadID: "0123456789ab", Index: 1, Generation: 3}) {
		t.Fatalf("labels %v: %v", s.GetLabels(), err)
	}
	if s.GetRestartPolicy().GetName() != "no" {
		t.Errorf("engine restart policy %q: restarting is the scheduler's job", s.GetRestartPolicy().GetName())
	}
	if s.GetImage() != "busybox" || s.GetEnv()["A"] != "1" || s.GetPorts()[0].GetContainerPort() != 80 ||
		s.GetResources().GetNanoCpus() != 5e8 || len(s.GetName()) < len("web-1-g3-") {
		t.Errorf("spec %v", s)
	}
	if other := ContainerSpec(CreateRequest{WorkloadID: "0123456789ab", Index: 1, Generation: 3, Spec: &schedulerv1.WorkloadSpec{Name: "web"}}); other.GetName() == s.GetName() {
		t.Error("a replacement would collide with its predecessor's name")
	}
}
