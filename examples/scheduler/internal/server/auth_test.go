package server

import "testing"

func TestRoles(t *testing.T) {
	for _, c := range []struct {
		role, method string
		ok           bool
	}{
		{RoleAdmin, service + "ApplyWorkload", true},
		{RoleAdmin, service + "DeleteWorkload", true},
		{RoleObserver, service + "ApplyWorkload", false},
		{RoleObserver, service + "DeleteWorkload", false},
		{RoleObserver, service + "GetWorkload", true},
		{RoleObserver, service + "ListWorkloads", true},
		{RoleObserver, service + "WatchWorkloads", true},
		{RoleObserver, service + "ListNodes", true},
		{RoleObserver, "/grpc.health.v1.Health/Check", true},
		{RoleObserver, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", true},
		{RoleObserver, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", true},
		{"", service + "GetWorkload", false},
		{"root", service + "GetWorkload", false},
	} {
		if got := Allows(c.role, c.method); got != c.ok {
			t.Errorf("Allows(%q, %q) = %v", c.role, c.method, got)
		}
	}
}

func TestParsePrincipals(t *testing.T) {
	got, err := ParsePrincipals([]byte(`{"version": 1, "principals": {"driver": "admin", "ci": "observer"}}`), "p.json")
	if err != nil || got["driver"] != RoleAdmin || got["ci"] != RoleObserver {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range []string{`[]`, `{"principals": {"x": "root"}}`, `{"principals": {"bad name": "admin"}}`, `{}`} {
		if _, err := ParsePrincipals([]byte(bad), "p.json"); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}
