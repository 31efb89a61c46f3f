package discovery

import "testing"

// The same paths shakedown/skydns.py's service_path gives.
func TestServicePathMatchesThePythonLayout(t *testing.T) {
	for _, c := range []struct{ service, domain, want string }{
		{"scheduler", "shakedown.test", "/skydns/test/shakedown/_tcp/_scheduler"},
		{"shakedown-agent", "Lab.Example.COM.", "/skydns/com/example/lab/_tcp/_shakedown-agent"},
	} {
		if got, err := ServicePath(c.service, c.domain); err != nil || got != c.want {
			t.Errorf("ServicePath(%q, %q) = %q, %v; want %q", c.service, c.domain, got, err, c.want)
		}
	}
	for _, d := range []string{"", "a..b", "bad domain"} {
		if _, err := ServicePath("scheduler", d); err == nil {
			t.Errorf("domain %q accepted", d)
		}
	}
}

func TestParseSkipsUnusableRecords(t *testing.T) {
	p := "/skydns/test/x/_tcp/_shakedown-agent"
	got, bad := parse(p, map[string][]byte{
		p + "/n1":     []byte(`{"host":"10.0.0.1","port":7443,"priority":10,"weight":10,"ttl":10}`),
		p + "/n2":     []byte(`{"host":"","port":7443}`),
		p + "/n3":     []byte(`not json`),
		p + "/n4/sub": []byte(`{"host":"h","port":1}`),
	})
	if len(got) != 1 || got["n1"].Address() != "10.0.0.1:7443" || len(bad) != 3 {
		t.Fatalf("%v %v", got, bad)
	}
}
