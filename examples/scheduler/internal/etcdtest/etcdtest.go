// Package etcdtest gives integration tests a real etcd: the one SHAKEDOWN_ETCD
// names, else an `etcd` from PATH started on loopback ports with a temporary
// data dir and stopped (by its PID) when the test ends; without either the
// test is skipped. Every test gets a key prefix of its own and removes only that.
package etcdtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Etcd is a reachable etcd for one test.
type Etcd struct {
	Endpoint string
	Prefix   string // unique to the test
}

// Start finds or starts an etcd.
func Start(t *testing.T) *Etcd {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	e := &Etcd{Endpoint: os.Getenv("SHAKEDOWN_ETCD"), Prefix: "/shakedown-scheduler-test-" + hex.EncodeToString(b)}
	if e.Endpoint == "" {
		bin, err := exec.LookPath("etcd")
		if err != nil {
			t.Skip("no etcd: set SHAKEDOWN_ETCD or put etcd on PATH")
		}
		e.Endpoint = launch(t, bin)
	}
	c := e.Client(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = c.Delete(ctx, e.Prefix, clientv3.WithPrefix())
	})
	return e
}

// Client is a client closed when the test ends.
func (e *Etcd) Client(t *testing.T) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// FreePort is a loopback TCP port free at the time of asking.
func FreePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func launch(t *testing.T, bin string) string {
	dir := t.TempDir()
	client := fmt.Sprintf("http://127.0.0.1:%d", FreePort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", FreePort(t))
	cmd := exec.Command(bin, "--name", "t", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "t="+peer)
	logf, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // our child, by PID
		_ = cmd.Wait()
		_ = logf.Close()
	})
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Get(ctx, "ready")
		cancel()
		if err == nil {
			return client
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "etcd.log"))
			t.Fatalf("etcd at %s not ready: %v\n%s", client, err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ClientNoCleanup is a client the test closes itself (to simulate a crash).
func ClientNoCleanup(t *testing.T, e *Etcd) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	return c
}
