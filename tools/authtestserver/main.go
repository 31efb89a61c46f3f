// authtestserver: a grpc-go server shaped like the third-party services
// `shakedown verify auth` is pointed at. mTLS against one CA, a unary
// interceptor that admits only allow-listed certificate CNs, server
// reflection, grpc.testing.TestService (EmptyCall, UnaryCall), and NO health
// service. -allow "" switches the allow-list off (any cert from the CA gets
// in: the flaw verify must report); -crl makes the handshake refuse revoked
// certificates. -deny-code unimplemented makes the interceptor refuse with
// UNIMPLEMENTED (servers that hide methods from strangers), -no-reflection
// leaves reflection out.
//
// It prints "listening on HOST:PORT" on stdout once it serves.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

type testService struct {
	testpb.UnimplementedTestServiceServer
}

func (testService) EmptyCall(context.Context, *testpb.Empty) (*testpb.Empty, error) {
	return &testpb.Empty{}, nil
}

func (testService) UnaryCall(_ context.Context, in *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	if in.GetResponseSize() < 0 {
		return nil, status.Error(codes.InvalidArgument, "response_size: must be >= 0")
	}
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: make([]byte, in.GetResponseSize())}}, nil
}

func allowList(allowed map[string]bool, deny codes.Code) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		p, ok := peer.FromContext(ctx)
		if !ok {
			return nil, status.Error(codes.Unauthenticated, "no peer")
		}
		ti, ok := p.AuthInfo.(credentials.TLSInfo)
		if !ok || len(ti.State.PeerCertificates) == 0 {
			return nil, status.Error(codes.Unauthenticated, "no client certificate")
		}
		cn := ti.State.PeerCertificates[0].Subject.CommonName
		if !allowed[cn] {
			if deny == codes.Unimplemented {
				return nil, status.Errorf(deny, "unknown method %s", info.FullMethod)
			}
			return nil, status.Errorf(deny, "principal %q is not allowed", cn)
		}
		return h(ctx, req)
	}
}

func loadCRL(path string, ca *x509.Certificate) (map[string]bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if block, _ := pem.Decode(data); block != nil {
		data = block.Bytes
	}
	crl, err := x509.ParseRevocationList(data)
	if err != nil {
		return nil, err
	}
	if err := crl.CheckSignatureFrom(ca); err != nil {
		return nil, fmt.Errorf("crl not signed by the CA: %w", err)
	}
	revoked := map[string]bool{}
	for _, e := range crl.RevokedCertificateEntries {
		revoked[e.SerialNumber.String()] = true
	}
	return revoked, nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	caPath := flag.String("ca", "", "CA certificate (PEM) client certificates must chain to")
	certPath := flag.String("cert", "", "server certificate (PEM)")
	keyPath := flag.String("key", "", "server key (PEM)")
	allow := flag.String("allow", "driver", "comma-separated client CNs allowed to call; empty: anyone with a CA cert")
	crlPath := flag.String("crl", "", "CRL (PEM or DER): refuse listed client certificates in the handshake")
	denyCode := flag.String("deny-code", "permission_denied", "status for a CN off the allow-list: permission_denied or unimplemented")
	noReflection := flag.Bool("no-reflection", false, "do not serve server reflection")
	flag.Parse()
	log.SetFlags(0)
	deny := codes.PermissionDenied
	switch *denyCode {
	case "permission_denied":
	case "unimplemented":
		deny = codes.Unimplemented
	default:
		log.Fatalf("-deny-code %q: want permission_denied or unimplemented", *denyCode)
	}

	caPEM, err := os.ReadFile(*caPath)
	if err != nil {
		log.Fatalf("-ca: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		log.Fatalf("-ca %s: no certificate", *caPath)
	}
	pair, err := tls.LoadX509KeyPair(*certPath, *keyPath)
	if err != nil {
		log.Fatalf("-cert/-key: %v", err)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
	}
	if *crlPath != "" {
		block, _ := pem.Decode(caPEM)
		ca, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			log.Fatalf("-ca: %v", err)
		}
		revoked, err := loadCRL(*crlPath, ca)
		if err != nil {
			log.Fatalf("-crl: %v", err)
		}
		cfg.VerifyPeerCertificate = func(_ [][]byte, chains [][]*x509.Certificate) error {
			for _, chain := range chains {
				if len(chain) > 0 && revoked[chain[0].SerialNumber.String()] {
					return errors.New("client certificate revoked")
				}
			}
			return nil
		}
	}
	var opts []grpc.ServerOption
	opts = append(opts, grpc.Creds(credentials.NewTLS(cfg)))
	if *allow != "" {
		allowed := map[string]bool{}
		for _, cn := range strings.Split(*allow, ",") {
			allowed[strings.TrimSpace(cn)] = true
		}
		opts = append(opts, grpc.UnaryInterceptor(allowList(allowed, deny)))
	}
	srv := grpc.NewServer(opts...)
	testpb.RegisterTestServiceServer(srv, testService{})
	if !*noReflection {
		reflection.Register(srv)
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("-listen: %v", err)
	}
	fmt.Printf("listening on %s\n", lis.Addr())
	os.Stdout.Sync()
	if err := srv.Serve(lis); err != nil {
		log.Fatal(err)
	}
}
