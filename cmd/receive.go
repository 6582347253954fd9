package cmd

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/flux-order/flux-order/purchase/delivery"
)

// newReceiveCommand is the reference receiver of a sale's webhooks
// (docs/delivery.md): it verifies each delivery, prints each event once
// as a JSON line, and on exit (SIGTERM, or after --count events) prints
// what it saw: events, duplicates, bad signatures.
func newReceiveCommand() *cobra.Command {
	var listen string
	var secrets []string
	var count int
	var failFor time.Duration
	c := &cobra.Command{
		Use:   "receive",
		Short: "Receive a sale's webhooks: verify, print each event once, count duplicates and bad signatures",
		Long: "Receive a sale's webhooks (Standard Webhooks v1). Every delivery is verified against the\n" +
			"signing secrets (whsec_..., any one may verify; FLUX_ORDER_SIGNING_SECRET holds them\n" +
			"space-separated) and a 5-minute timestamp tolerance; a bad one gets 401. Each event is\n" +
			"printed once, as its body on one line (within 100 ms: output is buffered); a delivery\n" +
			"of an event already printed is answered 204 and counted as a duplicate.\n\n" +
			"GET /stats answers what it measured as JSON (events, order events, duplicates, bad\n" +
			"signatures, refused attempts, when the first and last event were kept, and the lag of\n" +
			"the order events from their purchasedAt to this receiver's 2xx: p50, p90, p99, max);\n" +
			"it is printed on exit too. --fail-for plays an outage: every verified delivery is\n" +
			"answered 503 for that long from the first delivery received, then 2xx (make bench's\n" +
			"backlog drain).",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := bindEnv(c.Flags()); err != nil {
				return err
			}
			var all []string
			for _, s := range secrets {
				all = append(all, strings.Fields(s)...)
			}
			if len(all) == 0 {
				return errors.New("--signing-secret is required (whsec_...)")
			}
			ctx, cancel := context.WithCancel(c.Context())
			defer cancel()
			return receive(ctx, cancel, receiveOptions{listen: listen, secrets: all, count: count, failFor: failFor}, c.OutOrStdout(), c.ErrOrStderr())
		},
	}
	f := c.Flags()
	f.StringVar(&listen, "listen", ":8080", "address to receive deliveries on (any path)")
	f.StringSliceVar(&secrets, "signing-secret", nil, "signing secret whsec_... (repeat, or space-separate, during a rotation)")
	f.IntVar(&count, "count", 0, "exit after this many distinct events (0: run until stopped)")
	f.DurationVar(&failFor, "fail-for", 0, "answer 503 to every verified delivery for this long from the first delivery received, then 2xx (an outage, for benchmarks; 0: never)")
	return c
}

// printFlush is how long a printed event may wait in the output buffer.
const printFlush = 100 * time.Millisecond

type receiveOptions struct {
	listen  string
	secrets []string
	count   int
	failFor time.Duration
}

// receiveStats is GET /stats: the receiver's Report and, with --fail-for,
// when the outage ended (zero until a first delivery started it).
type receiveStats struct {
	delivery.Report
	RecoveredAt time.Time `json:"recoveredAt,omitzero"`
}

func receive(ctx context.Context, cancel func(), o receiveOptions, out, errOut io.Writer) error {
	var mu sync.Mutex
	seen := 0
	r := delivery.NewReceiver(o.secrets...)
	var recoveredAt time.Time // guarded by mu
	if o.failFor > 0 {
		r.Answer = func(string, int) int {
			mu.Lock()
			defer mu.Unlock()
			if recoveredAt.IsZero() {
				recoveredAt = time.Now().Add(o.failFor)
			}
			if time.Now().Before(recoveredAt) {
				return http.StatusServiceUnavailable
			}
			return http.StatusNoContent
		}
	}
	stats := func() receiveStats {
		mu.Lock()
		defer mu.Unlock()
		return receiveStats{Report: r.Report(), RecoveredAt: recoveredAt}
	}
	// Events are printed through a buffer flushed every printFlush (and
	// before exit): one write per event was a system call per delivery in
	// the receiver, and one more in whatever reads its output, at the
	// thousands of events a second of a sell-out.
	printed := bufio.NewWriterSize(out, 64<<10)
	flush := func() {
		mu.Lock()
		defer mu.Unlock()
		_ = printed.Flush()
	}
	defer flush()
	flushing := time.NewTicker(printFlush)
	defer flushing.Stop()
	stopFlushing := make(chan struct{})
	defer close(stopFlushing)
	go func() {
		for {
			select {
			case <-stopFlushing:
				return
			case <-flushing.C:
				flush()
			}
		}
	}()
	r.OnEvent = func(_ string, body []byte) {
		mu.Lock()
		defer mu.Unlock()
		_, _ = printed.Write(body)
		_ = printed.WriteByte('\n')
		if seen++; o.count > 0 && seen >= o.count {
			_ = printed.Flush()
			cancel()
		}
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodGet && req.URL.Path == "/stats" {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(stats())
			return
		}
		r.ServeHTTP(w, req)
	})
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second}
	fmt.Fprintf(errOut, "receiving on %s\n", ln.Addr())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-served:
		return err
	}
	shut, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	_ = srv.Shutdown(shut)
	fmt.Fprintf(errOut, "received %s\n", r.Report())
	return nil
}
