package bugs

import (
	"strings"
	"testing"
)

func TestSetParsesNamesAndRefusesUnknownOnes(t *testing.T) {
	s := Set{}
	if s.Has(BlindWrite) || s.String() != "" {
		t.Fatalf("the zero set enables %q", s)
	}
	if err := s.Set(DualLeader); err != nil {
		t.Fatal(err)
	}
	if err := s.AddList(" blind-write, ,skip-orphan-gc"); err != nil {
		t.Fatal(err)
	}
	if got := s.String(); got != "blind-write,dual-leader,skip-orphan-gc" {
		t.Fatalf("enabled %q", got)
	}
	err := Set{}.Set("dual-leaders")
	if err == nil || !strings.Contains(err.Error(), `"dual-leaders"`) || !strings.Contains(err.Error(), SkipOrphanGC) {
		t.Fatalf("unknown name: %v", err)
	}
	for _, name := range (Set{}).Known() {
		if Known[name] == "" {
			t.Errorf("%s: no description", name)
		}
	}
}
