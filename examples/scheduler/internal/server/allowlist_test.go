package server

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestAllowListFollowsTheFileAndKeepsTheLastGoodOne(t *testing.T) {
	path := filepath.Join(t.TempDir(), "principals.json")
	write := func(s string, at time.Time) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, at, at); err != nil { // a distinct stamp even within one clock tick
			t.Fatal(err)
		}
	}
	t0 := time.Now()
	write(`{"version": 1, "principals": {"ci": "observer"}}`, t0)
	a, err := LoadAllowList(path)
	if err != nil {
		t.Fatal(err)
	}
	if p, r, ok := a.Role([]string{"nobody", "ci"}); !ok || p != "ci" || r != RoleObserver {
		t.Fatalf("%q %q %v", p, r, ok)
	}
	write(`{"version": 1, "principals": {"ci": "admin"}}`, t0.Add(time.Second))
	if _, r, _ := a.Role([]string{"ci"}); r != RoleAdmin {
		t.Fatalf("change not picked up: role %q", r)
	}
	write(`{"version": 1, "principals": {"ci": "root"}}`, t0.Add(2*time.Second))
	if _, r, _ := a.Role([]string{"ci"}); r != RoleAdmin {
		t.Fatalf("a bad file replaced the last good list: role %q", r)
	}
	if _, err := LoadAllowList(path); err == nil {
		t.Fatal("a bad file is accepted at start-up")
	}
}
