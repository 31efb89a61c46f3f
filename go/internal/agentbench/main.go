// Command agentbench issues signed GetNodeInfo calls through agentclient for
// bench/bench_goclient.py, and prints {"calls": N, "seconds": S, "errors": E}.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shakedown-dev/shakedown/go/agentclient"
	agentv1 "github.com/shakedown-dev/shakedown/go/gen/shakedown/agent/v1"
)

func main() {
	var o agentclient.Options
	target := flag.String("target", "", "HOST:PORT")
	flag.StringVar(&o.CA, "ca", "", "CA file")
	flag.StringVar(&o.Cert, "cert", "", "client certificate")
	flag.StringVar(&o.Key, "key", "", "client key")
	flag.StringVar(&o.Keyring, "keys", "", "keyring")
	threads := flag.Int("threads", 4, "concurrent callers on one connection")
	duration := flag.Duration("duration", 3*time.Second, "how long to call")
	maxCalls := flag.Int64("max", 100000, "stop after this many calls")
	flag.Parse()

	ctx := context.Background()
	c, err := agentclient.Dial(ctx, *target, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	defer c.Close()
	if _, err := c.GetNodeInfo(ctx, &agentv1.GetNodeInfoRequest{}); err != nil { // warm-up
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var calls, errs atomic.Int64
	deadline := time.Now().Add(*duration)
	start := time.Now()
	var wg sync.WaitGroup
	for range *threads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && calls.Load() < *maxCalls {
				if _, err := c.GetNodeInfo(ctx, &agentv1.GetNodeInfoRequest{}); err != nil {
					errs.Add(1)
					continue
				}
				calls.Add(1)
			}
		}()
	}
	wg.Wait()
	_ = json.NewEncoder(os.Stdout).Encode(map[string]any{
		"calls": calls.Load(), "seconds": time.Since(start).Seconds(), "errors": errs.Load()})
}
