// Command healthprobe is the compose stack's health check, static so it fits
// in the FROM scratch images:
//
//	healthprobe grpc ADDR -ca CA -cert CRT -key KEY [-server-name NAME] [-service SVC]
//	healthprobe http URL
//
// grpc asks the gRPC health service (grpc.health.v1) over mutual TLS, as the
// stack's clients would connect; http GETs a plain-HTTP probe (CoreDNS /ready,
// etcd /health, the scheduler's loopback /healthz). Exit 0 when serving, 1
// otherwise (the reason on stderr), 2 on a usage error.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

const timeout = 3 * time.Second

func main() {
	if len(os.Args) < 3 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "grpc":
		err = probeGRPC(os.Args[2], os.Args[3:])
	case "http":
		err = probeHTTP(os.Args[2])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "healthprobe:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: healthprobe grpc ADDR -ca FILE -cert FILE -key FILE [-server-name NAME] [-service SVC]\n"+
		"       healthprobe http URL")
	os.Exit(2)
}

func probeGRPC(addr string, args []string) error {
	fs := flag.NewFlagSet("grpc", flag.ContinueOnError)
	ca := fs.String("ca", "", "CA certificate (required)")
	cert := fs.String("cert", "", "client certificate (required)")
	key := fs.String("key", "", "its key (required)")
	serverName := fs.String("server-name", "localhost", "name the server's certificate must carry")
	service := fs.String("service", "", "health service name (\"\": the whole server)")
	if err := fs.Parse(args); err != nil {
		os.Exit(2)
	}
	if *ca == "" || *cert == "" || *key == "" {
		fmt.Fprintln(os.Stderr, "healthprobe grpc: -ca, -cert and -key are required")
		os.Exit(2)
	}
	pair, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		return fmt.Errorf("-cert/-key: %w", err)
	}
	pem, err := os.ReadFile(*ca)
	if err != nil {
		return fmt.Errorf("-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("-ca %s: no certificate in it", *ca)
	}
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool,
		ServerName: *serverName, MinVersion: tls.VersionTLS12})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: *service})
	if err != nil {
		return fmt.Errorf("%s: %w", addr, err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("%s: %s", addr, resp.GetStatus())
	}
	return nil
}

func probeHTTP(url string) error {
	client := http.Client{Timeout: timeout}
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d %s", url, resp.StatusCode, body)
	}
	return nil
}
