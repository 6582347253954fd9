package cmd

import (
	"context"
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
	c := &cobra.Command{
		Use:   "receive",
		Short: "Receive a sale's webhooks: verify, print each event once, count duplicates and bad signatures",
		Long: "Receive a sale's webhooks (Standard Webhooks v1). Every delivery is verified against the\n" +
			"signing secrets (whsec_..., any one may verify; FLUX_ORDER_SIGNING_SECRET holds them\n" +
			"space-separated) and a 5-minute timestamp tolerance; a bad one gets 401. Each event is\n" +
			"printed once, as its body on one line; a delivery of an event already printed is\n" +
			"answered 204 and counted as a duplicate.",
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
			return receive(ctx, cancel, listen, all, count, c.OutOrStdout(), c.ErrOrStderr())
		},
	}
	f := c.Flags()
	f.StringVar(&listen, "listen", ":8080", "address to receive deliveries on (any path)")
	f.StringSliceVar(&secrets, "signing-secret", nil, "signing secret whsec_... (repeat, or space-separate, during a rotation)")
	f.IntVar(&count, "count", 0, "exit after this many distinct events (0: run until stopped)")
	return c
}

func receive(ctx context.Context, cancel func(), listen string, secrets []string, count int, out, errOut io.Writer) error {
	var mu sync.Mutex
	seen := 0
	r := delivery.NewReceiver(secrets...)
	r.OnEvent = func(_ string, body []byte) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, "%s\n", body)
		if seen++; count > 0 && seen >= count {
			cancel()
		}
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second}
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
	fmt.Fprintf(errOut, "received %s\n", r.Stats())
	return nil
}
