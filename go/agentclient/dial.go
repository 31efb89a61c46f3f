// Package agentclient dials a Shakedown agent over mutual TLS and signs every
// call with scheme v2 (docs/protocol.md). The returned Client embeds the
// generated AgentClient, so every RPC of the proto is a method on it.
package agentclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"

	agentv1 "github.com/shakedown-dev/shakedown/go/gen/shakedown/agent/v1"
	"github.com/shakedown-dev/shakedown/go/signing"
)

// Options say how to reach and authenticate to one agent. CA, Cert, Key and
// Keyring are file paths; Cert/Key is the client certificate of Principal.
type Options struct {
	CA, Cert, Key string
	Keyring       string
	Principal     string // whose newest active key signs; default "driver"
	KeyID         string // sign with this key instead
	ServerName    string // TLS name to verify; default the target's host
	// Audience is the agent's name, which every signature is bound to. Empty:
	// the CN of the agent's certificate, read by one handshake at Dial.
	Audience string
	Retries  int           // attempts for idempotent calls on UNAVAILABLE (and for 1.5 s at least); default 4
	Backoff  time.Duration // first retry delay; default 100ms
	Clock    func() time.Time
}

// Client is a signed connection to one agent.
type Client struct {
	agentv1.AgentClient
	Conn     *grpc.ClientConn
	Audience string
}

// Close closes the connection.
func (c *Client) Close() error { return c.Conn.Close() }

// Dial connects to target ("host:port"). It fails early, naming the option,
// on unreadable or too-open key material.
func Dial(ctx context.Context, target string, o Options) (*Client, error) {
	cfg, err := TLSConfig(target, o)
	if err != nil {
		return nil, err
	}
	kr, err := signing.LoadKeyring(o.Keyring)
	if err != nil {
		return nil, fmt.Errorf("Keyring: %w", err)
	}
	principal := o.Principal
	if principal == "" {
		principal = "driver"
	}
	var key signing.Key
	if o.KeyID != "" {
		var ok bool
		if key, ok = kr.Get(o.KeyID); !ok {
			return nil, fmt.Errorf("KeyID: %q is not in the keyring %s", o.KeyID, o.Keyring)
		}
	} else if key, err = kr.SigningKey(principal); err != nil {
		return nil, fmt.Errorf("Principal: %w (keyring %s)", err, o.Keyring)
	}
	audience := o.Audience
	if audience == "" {
		if audience, err = agentName(ctx, target, cfg); err != nil {
			return nil, fmt.Errorf("Audience: not given, and %w", err)
		}
	}
	s := &signer{key: key, audience: audience, now: o.Clock}
	if s.now == nil {
		s.now = time.Now
	}
	r := retrier{attempts: o.Retries, base: o.Backoff}
	if r.attempts <= 0 {
		r.attempts = 4
	}
	if r.base <= 0 {
		r.base = 100 * time.Millisecond
	}
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(codec{})),
		grpc.WithChainUnaryInterceptor(r.unary, s.unary),
		grpc.WithChainStreamInterceptor(r.stream, s.stream),
		// Agents are stopped and started on purpose: reconnect within a second, not
		// after gRPC's default backoff of up to 120 s (decision 37).
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
			BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2,
			MaxDelay: time.Second}, MinConnectTimeout: 20 * time.Second}),
	)
	if err != nil {
		return nil, fmt.Errorf("target %q: %w", target, err)
	}
	return &Client{AgentClient: agentv1.NewAgentClient(conn), Conn: conn, Audience: audience}, nil
}

// TLSConfig is the mutual-TLS configuration Dial uses for target.
func TLSConfig(target string, o Options) (*tls.Config, error) {
	for _, f := range []struct{ name, path string }{{"CA", o.CA}, {"Cert", o.Cert}, {"Key", o.Key}, {"Keyring", o.Keyring}} {
		if f.path == "" {
			return nil, fmt.Errorf("%s: a file path is required", f.name)
		}
	}
	if err := signing.CheckPrivate(o.Key); err != nil {
		return nil, fmt.Errorf("Key: %w", err)
	}
	pair, err := tls.LoadX509KeyPair(o.Cert, o.Key)
	if err != nil {
		return nil, fmt.Errorf("Cert/Key: %w", err)
	}
	caPEM, err := os.ReadFile(o.CA)
	if err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("CA: no PEM certificate in %s", o.CA)
	}
	name := o.ServerName
	if name == "" {
		host, _, err := net.SplitHostPort(target)
		if err != nil {
			return nil, fmt.Errorf("target %q: want host:port: %w", target, err)
		}
		name = host
	}
	return &tls.Config{
		Certificates: []tls.Certificate{pair}, RootCAs: pool, ServerName: name,
		MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"},
	}, nil
}

// agentName is the CN of the agent's certificate, verified against the CA.
func agentName(ctx context.Context, target string, cfg *tls.Config) (string, error) {
	d := tls.Dialer{Config: cfg.Clone()}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	conn, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return "", fmt.Errorf("the agent's certificate could not be read: %w", err)
	}
	defer conn.Close()
	certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 || certs[0].Subject.CommonName == "" {
		return "", errors.New("the agent's certificate has no CN")
	}
	return certs[0].Subject.CommonName, nil
}
