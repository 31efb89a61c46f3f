package agentclient

import (
	"context"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/shakedown-dev/shakedown/go/signing"
)

// unsigned are the services that need mTLS but no signature.
var unsigned = []string{"/grpc.health.v1.Health/", "/grpc.reflection."}

// signer puts a fresh scheme-v2 signature on each call (each retry included:
// the agent remembers nonces, so a resent signature would be a replay).
type signer struct {
	key      signing.Key
	audience string
	now      func() time.Time
}

func needsSignature(method string) bool {
	for _, p := range unsigned {
		if strings.HasPrefix(method, p) {
			return false
		}
	}
	return true
}

func (s *signer) sign(ctx context.Context, method string, req any) (context.Context, *signedBody, error) {
	body, err := marshal(req)
	if err != nil {
		return nil, nil, status.Errorf(codes.Internal, "serializing the %s request: %v", method, err)
	}
	nonce, err := signing.NewNonce()
	if err != nil {
		return nil, nil, status.Error(codes.Internal, err.Error())
	}
	md, err := signing.Sign(s.key.Secret, signing.Request{
		KeyID: s.key.ID, Audience: s.audience, Method: method,
		Timestamp: s.now().Unix(), Nonce: nonce, Body: body,
	})
	if err != nil {
		return nil, nil, status.Errorf(codes.InvalidArgument, "signing %s: %v", method, err)
	}
	return metadata.AppendToOutgoingContext(ctx, md...), &signedBody{body}, nil
}

func (s *signer) unary(ctx context.Context, method string, req, reply any,
	cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if !needsSignature(method) {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	ctx, body, err := s.sign(ctx, method, req)
	if err != nil {
		return err
	}
	return invoker(ctx, method, body, reply, cc, opts...)
}

// stream signs server-streaming calls, whose one request is only known at its
// SendMsg, after the stream would have sent its headers: the real stream is
// therefore opened lazily, on that first SendMsg, with the signature attached.
func (s *signer) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn,
	method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if !needsSignature(method) {
		return streamer(ctx, desc, cc, method, opts...)
	}
	if desc.ClientStreams {
		return nil, status.Errorf(codes.Unimplemented,
			"%s is client-streaming: the protocol signs exactly one request", method)
	}
	return &lazyStream{ctx: ctx, open: func(req any) (grpc.ClientStream, *signedBody, error) {
		sctx, body, err := s.sign(ctx, method, req)
		if err != nil {
			return nil, nil, err
		}
		cs, err := streamer(sctx, desc, cc, method, opts...)
		return cs, body, err
	}}, nil
}

type lazyStream struct {
	ctx  context.Context
	open func(req any) (grpc.ClientStream, *signedBody, error)
	mu   sync.Mutex
	cs   grpc.ClientStream
}

var errNotSent = status.Error(codes.FailedPrecondition, "the stream's request was not sent yet")

func (l *lazyStream) inner() grpc.ClientStream {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cs
}

func (l *lazyStream) SendMsg(m any) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cs != nil {
		return status.Error(codes.Unimplemented, "a server-streaming call sends one request")
	}
	cs, body, err := l.open(m)
	if err != nil {
		return err
	}
	l.cs = cs
	return cs.SendMsg(body)
}

func (l *lazyStream) RecvMsg(m any) error {
	if cs := l.inner(); cs != nil {
		return cs.RecvMsg(m)
	}
	return errNotSent
}

func (l *lazyStream) CloseSend() error {
	if cs := l.inner(); cs != nil {
		return cs.CloseSend()
	}
	return nil
}

func (l *lazyStream) Header() (metadata.MD, error) {
	if cs := l.inner(); cs != nil {
		return cs.Header()
	}
	return nil, errNotSent
}

func (l *lazyStream) Trailer() metadata.MD {
	if cs := l.inner(); cs != nil {
		return cs.Trailer()
	}
	return nil
}

func (l *lazyStream) Context() context.Context {
	if cs := l.inner(); cs != nil {
		return cs.Context()
	}
	return l.ctx
}
