package agentclient_test

// Client units against an in-process grpc-go agent stand-in that verifies
// every scheme-v2 signature over the bytes it received.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

const fakeName = "fake-n1"

var secret = []byte("0123456789abcdef0123456789abcdef")

// rawCodec lets the stand-in see the request bytes exactly as received.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }
func (rawCodec) Marshal(v any) ([]byte, error) {
	if b, ok := v.(*[]byte); ok {
		return *b, nil
	}
	return proto.Marshal(v.(proto.Message))
}
func (rawCodec) Unmarshal(b []byte, v any) error {
	if p, ok := v.(*[]byte); ok {
		*p = append([]byte(nil), b...)
		return nil
	}
	return proto.Unmarshal(b, v.(proto.Message))
}

type standIn struct {
	mu        sync.Mutex
	calls     map[string]int
	nonces    map[string]bool
	failFirst map[string]int // method -> UNAVAILABLE answers before success
}

func (s *standIn) verify(ctx context.Context, method string, body []byte) error {
	md, _ := metadata.FromIncomingContext(ctx)
	h, err := signing.ParseHeaders(md.Get, signing.SchemeV2)
	if err != nil {
		return status.Error(codes.Unauthenticated, err.Error())
	}
	if h.Audience != fakeName {
		return status.Errorf(codes.Unauthenticated, "audience %q is not %q", h.Audience, fakeName)
	}
	if !signing.Matches(signing.SchemeV2, secret, method, body, h) {
		return status.Error(codes.Unauthenticated, "signature mismatch")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nonces[h.Nonce] {
		return status.Error(codes.Unauthenticated, "nonce replayed")
	}
	s.nonces[h.Nonce] = true
	return nil
}

func (s *standIn) handler(srv any, stream grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(stream)
	var body []byte
	if err := stream.RecvMsg(&body); err != nil {
		return err
	}
	if err := s.verify(stream.Context(), method, body); err != nil {
		return err
	}
	s.mu.Lock()
	s.calls[method]++
	n := s.calls[method]
	fail := s.failFirst[method]
	s.mu.Unlock()
	if n <= fail {
		return status.Error(codes.Unavailable, "try again")
	}
	switch method {
	case "/shakedown.agent.v1.Agent/GetNodeInfo":
		return stream.SendMsg(&agentv1.NodeInfo{Name: fakeName})
	case "/shakedown.agent.v1.Agent/InspectContainer":
		stream.SetTrailer(metadata.Pairs(agentclient.FieldMetadata, "container"))
		return status.Error(codes.NotFound, "container: container \"x\" not found")
	case "/shakedown.agent.v1.Agent/Logs":
		var req agentv1.LogsRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			return err
		}
		for i := range 3 {
			if err := stream.SendMsg(&agentv1.LogChunk{Data: []byte(req.GetContainer() + string(rune('0'+i)))}); err != nil {
				return err
			}
		}
		return nil
	}
	return stream.SendMsg(&agentv1.Container{Id: "c1"})
}

func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: fakeName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key")
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

func serve(t *testing.T, s *standIn) (string, agentclient.Options) {
	dir := t.TempDir()
	certFile, keyFile := selfSigned(t, dir)
	srv, addr := start(t, s, certFile, keyFile, "127.0.0.1:0")
	t.Cleanup(srv.Stop)
	return addr, options(t, dir, certFile, keyFile)
}

// start serves s with mutual TLS on addr (":0" picks a port); the address it got.
func start(t *testing.T, s *standIn, certFile, keyFile, addr string) (*grpc.Server, string) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pem, _ := os.ReadFile(certFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{pair},
		ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert})),
		grpc.ForceServerCodec(rawCodec{}), grpc.UnknownServiceHandler(s.handler))
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	return srv, lis.Addr().String()
}

func options(t *testing.T, dir, certFile, keyFile string) agentclient.Options {
	ring := filepath.Join(dir, "keys.json")
	doc := `{"version": 1, "keys": [{"id": "driver-1", "principal": "driver", "secret": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", "active": true, "created": 1}]}`
	if err := os.WriteFile(ring, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return agentclient.Options{CA: certFile, Cert: certFile, Key: keyFile,
		Keyring: ring, Backoff: time.Millisecond}
}

// gRPC's default reconnect backoff grows to 120 s, and a channel in backoff fails
// calls at once: after seconds of refused calls, the first call to an agent that
// was back and serving failed (decision 37).
func TestACallJustAfterTheAgentCameBackGetsThrough(t *testing.T) {
	s := newStandIn()
	dir := t.TempDir()
	certFile, keyFile := selfSigned(t, dir)
	srv, addr := start(t, s, certFile, keyFile, "127.0.0.1:0")
	ctx := context.Background()
	c, err := agentclient.Dial(ctx, addr, options(t, dir, certFile, keyFile))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.GetNodeInfo(ctx, &agentv1.GetNodeInfoRequest{}); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	for deadline, n := time.Now().Add(8*time.Second), 0; time.Now().Before(deadline) && n < 40; n++ {
		short, cancel := context.WithTimeout(ctx, time.Second)
		_, err := c.GetNodeInfo(short, &agentv1.GetNodeInfoRequest{})
		cancel()
		if err == nil {
			t.Fatal("GetNodeInfo answered with the server stopped")
		}
	}
	again, _ := start(t, s, certFile, keyFile, addr)
	defer again.Stop()
	call, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := c.GetNodeInfo(call, &agentv1.GetNodeInfoRequest{}); err != nil {
		t.Fatalf("the first call after the server came back: %v", err)
	}
}

func newStandIn() *standIn {
	return &standIn{calls: map[string]int{}, nonces: map[string]bool{}, failFirst: map[string]int{}}
}

func TestSignedUnaryAndStreamCalls(t *testing.T) {
	s := newStandIn()
	addr, o := serve(t, s)
	ctx := context.Background()
	c, err := agentclient.Dial(ctx, addr, o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Audience != fakeName {
		t.Fatalf("audience %q from the certificate, want %q", c.Audience, fakeName)
	}
	info, err := c.GetNodeInfo(ctx, &agentv1.GetNodeInfoRequest{})
	if err != nil || info.GetName() != fakeName {
		t.Fatalf("GetNodeInfo: %v %v", info, err)
	}
	logs, err := c.Logs(ctx, &agentv1.LogsRequest{Container: "box"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		chunk, err := logs.Recv()
		if err != nil {
			if !errors.Is(err, context.Canceled) && err.Error() != "EOF" {
				t.Fatalf("Logs.Recv: %v", err)
			}
			break
		}
		got = append(got, string(chunk.GetData()))
	}
	if len(got) != 3 || got[0] != "box0" || got[2] != "box2" {
		t.Fatalf("Logs: %q", got)
	}
}

func TestIdempotentCallsRetryWithAFreshSignature(t *testing.T) {
	s := newStandIn()
	s.failFirst["/shakedown.agent.v1.Agent/GetNodeInfo"] = 2
	s.failFirst["/shakedown.agent.v1.Agent/CreateContainer"] = 1
	addr, o := serve(t, s)
	ctx := context.Background()
	c, err := agentclient.Dial(ctx, addr, o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.GetNodeInfo(ctx, &agentv1.GetNodeInfoRequest{}); err != nil {
		t.Fatalf("GetNodeInfo after 2 UNAVAILABLE: %v", err)
	}
	if n := s.calls["/shakedown.agent.v1.Agent/GetNodeInfo"]; n != 3 {
		t.Fatalf("GetNodeInfo reached the server %d times, want 3 (each freshly signed)", n)
	}
	_, err = c.CreateContainer(ctx, &agentv1.CreateContainerRequest{SessionId: "s"})
	if !errors.Is(err, agentclient.ErrUnavailable) {
		t.Fatalf("CreateContainer: want ErrUnavailable, not retried; got %v", err)
	}
	if n := s.calls["/shakedown.agent.v1.Agent/CreateContainer"]; n != 1 {
		t.Fatalf("CreateContainer was sent %d times: never retry a create", n)
	}
}

func TestErrorsAreTypedWithTheirField(t *testing.T) {
	addr, o := serve(t, newStandIn())
	ctx := context.Background()
	c, err := agentclient.Dial(ctx, addr, o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.InspectContainer(ctx, &agentv1.InspectContainerRequest{Container: "x"})
	var e *agentclient.Error
	if !errors.As(err, &e) || !errors.Is(err, agentclient.ErrNotFound) || errors.Is(err, agentclient.ErrAuth) {
		t.Fatalf("want a NotFound *Error, got %#v", err)
	}
	if e.Field != "container" || e.Message != `container "x" not found` {
		t.Fatalf("field %q message %q", e.Field, e.Message)
	}
	if status.Code(err) != codes.NotFound {
		t.Fatalf("status.Code sees %v", status.Code(err))
	}
}

func TestWrongAudienceAndBadOptions(t *testing.T) {
	addr, o := serve(t, newStandIn())
	ctx := context.Background()
	o.Audience = "other-node"
	c, err := agentclient.Dial(ctx, addr, o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.GetNodeInfo(ctx, &agentv1.GetNodeInfoRequest{}); !errors.Is(err, agentclient.ErrAuth) {
		t.Fatalf("want ErrAuth for another audience, got %v", err)
	}
	bad := o
	bad.Keyring = ""
	if _, err := agentclient.Dial(ctx, addr, bad); err == nil || err.Error() != "Keyring: a file path is required" {
		t.Fatalf("missing keyring: %v", err)
	}
	open := o
	if err := os.Chmod(o.Key, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := agentclient.Dial(ctx, addr, open); err == nil || !strings.Contains(err.Error(), "Key: permissions 0644") {
		t.Fatalf("world-readable key: %v", err)
	}
}
