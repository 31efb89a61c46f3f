package agentclient_test

// Interop: this Go client against a real Python agent (shakedown-agent from
// the project venv) on the real Docker engine, over mTLS + scheme-v2 signatures.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/shakedown-dev/shakedown/go/agentclient"
	agentv1 "github.com/shakedown-dev/shakedown/go/gen/shakedown/agent/v1"
	"github.com/shakedown-dev/shakedown/go/signing"
)

const runLabel = "dev.shakedown.test-run" // io.shakedown.* keys are the agent's own

type agentProc struct {
	name, addr, pki string
	cmd             *exec.Cmd
}

func repoRoot(t *testing.T) string {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// venvPython is the project venv's interpreter; missing, the test skips, unless
// SHAKEDOWN_REQUIRE_INTEROP=1 (CI sets it) makes that a failure.
func venvPython(t *testing.T) string {
	py := filepath.Join(repoRoot(t), ".venv", "bin", "python")
	if _, err := os.Stat(py); err != nil {
		msg := "interop needs the project venv (" + py + "): run scripts/setup.sh"
		if os.Getenv("SHAKEDOWN_REQUIRE_INTEROP") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return py
}

func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v\n%s%s", name, args, err, out.String(), errb.String())
	}
	return strings.TrimSpace(out.String())
}

func runID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "gointerop" + hex.EncodeToString(b)
}

// startAgent writes a PKI with the driver and viewer principals and a keyring
// through the Python CLI, then starts one agent, stopped by PID at cleanup.
func startAgent(t *testing.T, py, id string) *agentProc {
	t.Helper()
	root, work := repoRoot(t), t.TempDir()
	pki := filepath.Join(work, "pki")
	name := id + "-n1"
	cli := filepath.Join(filepath.Dir(py), "shakedown")
	run(t, root, cli, "certs", "init", pki, "--agent", name+"=127.0.0.1,localhost",
		"--principal", "driver:admin", "--principal", "viewer:observer")
	run(t, root, cli, "keys", "init", filepath.Join(pki, "keys.json"),
		"--principal", "driver", "--principal", "viewer")
	portFile := filepath.Join(work, "port")
	logf, err := os.Create(filepath.Join(work, "agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, "-m", "agent", "--name", name, "--listen", "127.0.0.1:0",
		"--certs", pki, "--keys", filepath.Join(pki, "keys.json"), "--port-file", portFile,
		"--state-dir", filepath.Join(work, "state"), "--grace-period", "2")
	cmd.Dir, cmd.Stdout, cmd.Stderr = root, logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a := &agentProc{name: name, pki: pki, cmd: cmd}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			log, _ := os.ReadFile(logf.Name())
			t.Logf("agent log:\n%s", log)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(portFile); err == nil {
			if port, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				a.addr = "127.0.0.1:" + strconv.Itoa(port)
				return a
			}
		}
		if cmd.ProcessState != nil || time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("agent did not listen within 30 s:\n%s", log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (a *agentProc) options(principal string) agentclient.Options {
	return agentclient.Options{
		CA: filepath.Join(a.pki, "ca.crt"), Keyring: filepath.Join(a.pki, "keys.json"),
		Cert:      filepath.Join(a.pki, "client-"+principal+".crt"),
		Key:       filepath.Join(a.pki, "client-"+principal+".key"),
		Principal: principal,
	}
}

func TestInteropWithPythonAgent(t *testing.T) {
	py := venvPython(t)
	id := runID()
	image := run(t, repoRoot(t), py, "-c",
		"import docker; from driver.images import ensure_busybox_image; print(ensure_busybox_image(docker.from_env()))")
	a := startAgent(t, py, id)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	c, err := agentclient.Dial(ctx, a.addr, a.options("driver"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Audience != a.name {
		t.Fatalf("audience from the agent's certificate: got %q, want %q", c.Audience, a.name)
	}

	info, err := c.GetNodeInfo(ctx, &agentv1.GetNodeInfoRequest{})
	if err != nil {
		t.Fatalf("GetNodeInfo: %v", err)
	}
	if info.GetName() != a.name {
		t.Fatalf("GetNodeInfo name: got %q, want %q", info.GetName(), a.name)
	}

	sess, err := c.OpenSession(ctx, &agentv1.OpenSessionRequest{Labels: map[string]string{runLabel: id}})
	if err != nil {
		t.Fatalf("OpenSession: %v", err)
	}
	defer func() {
		if _, err := c.CloseSession(context.Background(), &agentv1.CloseSessionRequest{SessionId: sess.GetId()}); err != nil {
			t.Errorf("CloseSession: %v", err)
		}
	}()

	box, err := c.CreateContainer(ctx, &agentv1.CreateContainerRequest{
		SessionId: sess.GetId(),
		Spec: &agentv1.ContainerSpec{Image: image, Command: []string{"sh", "-c", "echo from-go-logs; sleep 300"},
			Labels: map[string]string{runLabel: id}},
	})
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	if _, err := c.StartContainer(ctx, &agentv1.StartContainerRequest{Container: box.GetId()}); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	out, err := c.Exec(ctx, &agentv1.ExecRequest{Container: box.GetId(), Command: []string{"echo", "from exec"}})
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	if out.GetExitCode() != 0 || string(out.GetStdout()) != "from exec\n" {
		t.Fatalf("Exec: exit %d stdout %q", out.GetExitCode(), out.GetStdout())
	}

	logs, err := c.Logs(ctx, &agentv1.LogsRequest{Container: box.GetId(), Follow: true, Stdout: true})
	if err != nil {
		t.Fatalf("Logs: %v", err)
	}
	var seen strings.Builder
	for !strings.Contains(seen.String(), "from-go-logs") {
		chunk, err := logs.Recv()
		if err != nil {
			t.Fatalf("Logs.Recv after %q: %v", seen.String(), err)
		}
		seen.Write(chunk.GetData())
	}

	if _, err := c.RemoveContainer(ctx, &agentv1.RemoveContainerRequest{Container: box.GetId(), Force: true}); err != nil {
		t.Fatalf("RemoveContainer: %v", err)
	}
	_, err = c.InspectContainer(ctx, &agentv1.InspectContainerRequest{Container: box.GetId()})
	if !errors.Is(err, agentclient.ErrNotFound) {
		t.Fatalf("InspectContainer after remove: want ErrNotFound, got %v", err)
	}
	var typed *agentclient.Error
	if !errors.As(err, &typed) || typed.Field != "container" {
		t.Fatalf("InspectContainer after remove: want field container, got %#v", err)
	}

	t.Run("observer may not create", func(t *testing.T) {
		v, err := agentclient.Dial(ctx, a.addr, a.options("viewer"))
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		_, err = v.CreateContainer(ctx, &agentv1.CreateContainerRequest{SessionId: sess.GetId(),
			Spec: &agentv1.ContainerSpec{Image: image}})
		if !errors.Is(err, agentclient.ErrPolicy) {
			t.Fatalf("want ErrPolicy, got %v", err)
		}
	})
	t.Run("wrong audience is rejected", func(t *testing.T) {
		o := a.options("driver")
		o.Audience = id + "-n2"
		w, err := agentclient.Dial(ctx, a.addr, o)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		_, err = w.GetNodeInfo(ctx, &agentv1.GetNodeInfoRequest{})
		if !errors.Is(err, agentclient.ErrAuth) || !strings.Contains(err.Error(), "audience") {
			t.Fatalf("want ErrAuth naming the audience, got %v", err)
		}
	})
	t.Run("tampered body is rejected", func(t *testing.T) {
		tamperedCall(ctx, t, a)
	})
}

// tamperedCall signs a ListContainers request, then sends other bytes under
// that signature on a plain (unsigned) connection.
func tamperedCall(ctx context.Context, t *testing.T, a *agentProc) {
	o := a.options("driver")
	kr, err := signing.LoadKeyring(o.Keyring)
	if err != nil {
		t.Fatal(err)
	}
	key, err := kr.SigningKey("driver")
	if err != nil {
		t.Fatal(err)
	}
	const method = "/shakedown.agent.v1.Agent/ListContainers"
	signed, _ := proto.Marshal(&agentv1.ListContainersRequest{SessionId: "s-1"})
	sent, _ := proto.Marshal(&agentv1.ListContainersRequest{SessionId: "s-2"})
	nonce, _ := signing.NewNonce()
	md, err := signing.Sign(key.Secret, signing.Request{KeyID: key.ID, Audience: a.name,
		Method: method, Timestamp: time.Now().Unix(), Nonce: nonce, Body: signed})
	if err != nil {
		t.Fatal(err)
	}
	c, err := agentclient.Dial(ctx, a.addr, o) // for its TLS set-up only
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	conn, err := grpc.NewClient(a.addr, grpc.WithTransportCredentials(credentials.NewTLS(mustTLS(t, a.addr, o))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var reply agentv1.ListContainersResponse
	err = conn.Invoke(metadata.AppendToOutgoingContext(ctx, md...), method, rawBytes(sent), &reply,
		grpc.ForceCodec(passthrough{}))
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(status.Convert(err).Message(), "signature") {
		t.Fatalf("tampered body: want UNAUTHENTICATED about the signature, got %v", err)
	}
}

type rawBytes []byte

type passthrough struct{}

func (passthrough) Name() string { return "proto" }
func (passthrough) Marshal(v any) ([]byte, error) {
	if b, ok := v.(rawBytes); ok {
		return b, nil
	}
	return proto.Marshal(v.(proto.Message))
}
func (passthrough) Unmarshal(b []byte, v any) error { return proto.Unmarshal(b, v.(proto.Message)) }

func mustTLS(t *testing.T, target string, o agentclient.Options) *tls.Config {
	cfg, err := agentclient.TLSConfig(target, o)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
