package agentclient

import (
	"context"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	agentv1 "github.com/shakedown-dev/shakedown/go/gen/shakedown/agent/v1"
)

const service = "/shakedown.agent.v1.Agent/"

// idempotent are the calls safe to repeat when a response may have been lost,
// as in the Python client: reads, KeepAlive, Start, Stop, and a forced Remove.
// Create, Exec and OpenSession are never retried: they would happen twice.
var idempotent = map[string]bool{
	service + "GetNodeInfo": true, service + "InspectContainer": true,
	service + "ListContainers": true, service + "WaitContainer": true,
	service + "ListSessions": true, service + "KeepAlive": true,
	service + "StartContainer": true, service + "StopContainer": true,
	service + "InspectNetwork": true, service + "ListNetworks": true,
	// Faults: healing is idempotent (a healed fault stays healed), listing is a read.
	service + "ListFaults": true, service + "HealFault": true, service + "HealAll": true,
}

func retriable(method string, req any) bool {
	if r, ok := req.(*agentv1.RemoveContainerRequest); ok {
		return r.GetForce()
	}
	return idempotent[method]
}

// reconnectWindow: an idempotent call retries UNAVAILABLE for at least this long,
// longer than the connection backoff's cap (dial.go) plus its jitter, so a call
// made just after an agent came back sees the channel's next connect (as in the
// Python client, decision 37).
const reconnectWindow = 1500 * time.Millisecond

// retrier retries idempotent calls on UNAVAILABLE with jittered exponential
// backoff, inside the call's deadline, and types every error (fromStatus).
type retrier struct {
	attempts int
	base     time.Duration
}

func (r retrier) unary(ctx context.Context, method string, req, reply any,
	cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	delay := r.base
	started := time.Now()
	for attempt := 1; ; attempt++ {
		var trailer metadata.MD
		err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Trailer(&trailer))...)
		spent := attempt >= r.attempts && time.Since(started) >= reconnectWindow
		if err == nil || status.Code(err) != codes.Unavailable || spent ||
			!retriable(method, req) {
			return fromStatus(err, trailer)
		}
		wait := delay/2 + rand.N(delay/2+1)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return fromStatus(err, trailer)
		}
		select {
		case <-ctx.Done():
			return fromStatus(err, trailer)
		case <-time.After(wait):
		}
		delay = min(2*delay, 2*time.Second)
	}
}

// stream types the errors of streaming calls.
func (retrier) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn,
	method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, fromStatus(err, nil)
	}
	return typedStream{cs}, nil
}

type typedStream struct{ grpc.ClientStream }

func (t typedStream) SendMsg(m any) error {
	return fromStatus(t.ClientStream.SendMsg(m), nil)
}

func (t typedStream) RecvMsg(m any) error {
	err := t.ClientStream.RecvMsg(m)
	if err == nil {
		return nil
	}
	return fromStatus(err, t.ClientStream.Trailer())
}
