package labels

import (
	"strings"
	"testing"
)

func TestRoundTripAndErrors(t *testing.T) {
	l := For("0123456789ab", "web", 2, 7)
	id, err := Parse(l)
	if err != nil || id != (Identity{"0123456789ab", 2, 7}) {
		t.Fatalf("%+v %v", id, err)
	}
	for key, bad := range map[string]string{Managed: "false", WorkloadID: "", Replica: "-1", Generation: "0"} {
		m := For("0123456789ab", "web", 2, 7)
		m[key] = bad
		if _, err := Parse(m); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s=%q: %v, want an error naming it", key, bad, err)
		}
	}
	if err := CheckExtra("io.shakedown.test-run"); err == nil {
		t.Error("a reserved agent key was accepted")
	}
	if err := CheckExtra(Replica); err == nil {
		t.Error("a key of this convention was accepted")
	}
	if err := CheckExtra("run"); err != nil {
		t.Error(err)
	}
	if m := Merge(For("0123456789ab", "web", 0, 1), map[string]string{Replica: "9", "run": "r1"}); m[Replica] != "0" || m["run"] != "r1" {
		t.Fatalf("merge: %v", m)
	}
}
