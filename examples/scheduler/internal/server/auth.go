package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"regexp"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Roles, as in principals.json (shakedown/pkilayout.py).
const (
	RoleAdmin    = "admin"
	RoleObserver = "observer"
)

const service = "/scheduler.v1.Scheduler/"

// readOnly are the methods an observer may call.
var readOnly = map[string]bool{
	service + "GetWorkload": true, service + "ListWorkloads": true,
	service + "WatchWorkloads": true, service + "ListNodes": true,
}

// standard services any listed principal may use: they are read-only.
var standard = []string{"/grpc.health.v1.Health/", "/grpc.reflection.v1.ServerReflection/",
	"/grpc.reflection.v1alpha.ServerReflection/"}

// Allows says whether role may call method.
func Allows(role, method string) bool {
	switch role {
	case RoleAdmin:
		return true
	case RoleObserver:
		if readOnly[method] {
			return true
		}
		for _, p := range standard {
			if strings.HasPrefix(method, p) {
				return true
			}
		}
	}
	return false
}

var principalName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// ParsePrincipals reads {"version": 1, "principals": {name: role}}.
func ParsePrincipals(data []byte, source string) (map[string]string, error) {
	var doc struct {
		Principals map[string]string `json:"principals"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: not valid JSON: %w", source, err)
	}
	if doc.Principals == nil {
		return nil, fmt.Errorf(`%s: expected {"version": 1, "principals": {name: role}}`, source)
	}
	for name, role := range doc.Principals {
		if !principalName.MatchString(name) {
			return nil, fmt.Errorf("%s: principal name %q: use letters, digits, '.', '_' or '-'", source, name)
		}
		if role != RoleAdmin && role != RoleObserver {
			return nil, fmt.Errorf("%s: principal %q: unknown role %q (use admin, observer)", source, name, role)
		}
	}
	return doc.Principals, nil
}

// AllowList is principals.json, re-read when the file changes (as the agent
// does), so adding or removing a principal needs no restart. A file that
// turns unreadable or invalid keeps the last good list and reports why.
type AllowList struct {
	path  string
	mu    sync.Mutex
	stamp string
	roles map[string]string
}

// LoadAllowList reads path; a bad file is an error at start-up.
func LoadAllowList(path string) (*AllowList, error) {
	a := &AllowList{path: path}
	if err := a.refresh(); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *AllowList) refresh() error {
	fi, err := os.Stat(a.path)
	if err != nil {
		return fmt.Errorf("principals file: %w", err)
	}
	stamp := fmt.Sprintf("%d/%d", fi.ModTime().UnixNano(), fi.Size())
	if stamp == a.stamp {
		return nil
	}
	data, err := os.ReadFile(a.path)
	if err != nil {
		return fmt.Errorf("principals file: %w", err)
	}
	roles, err := ParsePrincipals(data, a.path)
	if err != nil {
		return err
	}
	a.stamp, a.roles = stamp, roles
	return nil
}

// Role is the role of the first of names on the list.
func (a *AllowList) Role(names []string) (principal, role string, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	_ = a.refresh() // keep the last good list on error
	for _, n := range names {
		if r, found := a.roles[n]; found {
			return n, r, true
		}
	}
	return "", "", false
}

// TLSConfig is the server side of mutual TLS: our certificate, and client
// certificates required and verified against the CA, and, when crlPath names
// a file, not revoked (the CRL is re-read when it changes; one that does not
// verify against the CA refuses every client: fail closed).
func TLSConfig(caPath, certPath, keyPath, crlPath string) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("-cert/-key: %w", err)
	}
	caPEM, err := os.ReadFile(caPath)
	if err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("CA: no PEM certificate in %s", caPath)
	}
	crl := &crlCheck{path: crlPath, ca: caPEM}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2"},
		VerifyPeerCertificate: func(_ [][]byte, chains [][]*x509.Certificate) error {
			if len(chains) == 0 || len(chains[0]) == 0 {
				return errors.New("no verified client certificate")
			}
			return crl.check(chains[0][0])
		},
	}
	return cfg, crl.load()
}

type crlCheck struct {
	path    string
	ca      []byte
	mu      sync.Mutex
	stamp   string
	revoked map[string]bool
	err     error
}

func (c *crlCheck) load() error {
	if c.path == "" {
		return nil
	}
	fi, err := os.Stat(c.path)
	if errors.Is(err, os.ErrNotExist) {
		c.revoked, c.err, c.stamp = nil, nil, ""
		return nil
	}
	if err != nil {
		c.err = fmt.Errorf("CRL %s: %w", c.path, err)
		return c.err
	}
	stamp := fmt.Sprintf("%d/%d", fi.ModTime().UnixNano(), fi.Size())
	if stamp == c.stamp {
		return c.err
	}
	c.stamp = stamp
	c.revoked, c.err = parseCRL(c.path, c.ca)
	return c.err
}

func parseCRL(path string, caPEM []byte) (map[string]bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("CRL %s: %w", path, err)
	}
	der := data
	if b := pemBlock(data); b != nil {
		der = b
	}
	list, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("CRL %s: %w", path, err)
	}
	var verified bool
	for _, ca := range pemCerts(caPEM) {
		if list.CheckSignatureFrom(ca) == nil {
			verified = true
		}
	}
	if !verified {
		return nil, fmt.Errorf("CRL %s: signature does not verify against the CA", path)
	}
	out := map[string]bool{}
	for _, e := range list.RevokedCertificateEntries {
		out[e.SerialNumber.String()] = true
	}
	return out, nil
}

func (c *crlCheck) check(leaf *x509.Certificate) error {
	if c.path == "" {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.load(); err != nil {
		return fmt.Errorf("cannot check revocation: %w", err)
	}
	if c.revoked[new(big.Int).Set(leaf.SerialNumber).String()] {
		return errors.New("client certificate is revoked")
	}
	return nil
}

type principalKey struct{}

// Principal is the caller of the RPC being served.
func Principal(ctx context.Context) string {
	p, _ := ctx.Value(principalKey{}).(string)
	return p
}

// Auth is the interceptor pair enforcing the allow-list on every method.
type Auth struct {
	List *AllowList
}

func (a *Auth) admit(ctx context.Context, method string) (context.Context, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no peer")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil, status.Error(codes.Unauthenticated, "a verified client certificate is required")
	}
	leaf := info.State.VerifiedChains[0][0]
	names := append([]string{leaf.Subject.CommonName}, leaf.DNSNames...)
	principal, role, ok := a.List.Role(names)
	if !ok {
		return nil, status.Errorf(codes.PermissionDenied, "principal %q is not on the allow-list", leaf.Subject.CommonName)
	}
	if !Allows(role, method) {
		return nil, status.Errorf(codes.PermissionDenied, "principal %q (role %s) may not call %s", principal, role, method)
	}
	return context.WithValue(ctx, principalKey{}, principal), nil
}

// Unary is the unary interceptor.
func (a *Auth) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, err := a.admit(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return h(ctx, req)
}

// Stream is the stream interceptor.
func (a *Auth) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, err := a.admit(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return h(srv, &stream{ServerStream: ss, ctx: ctx})
}

type stream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *stream) Context() context.Context { return s.ctx }

// pemBlock is the DER of the first PEM block of data, or nil if none.
func pemBlock(data []byte) []byte {
	if b, _ := pem.Decode(data); b != nil {
		return b.Bytes
	}
	return nil
}

func pemCerts(data []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			return out
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			out = append(out, c)
		}
	}
}
