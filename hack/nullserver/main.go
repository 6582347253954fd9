// Command nullserver answers every HTTP request with the same 409
// ticket_sold problem, doing no other work: the ceiling a purchase API on
// net/http could reach on this machine, and a target that shows whether a
// load client (wrk, flux-order loadtest) is itself the bottleneck.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// body is what the purchase service answers for a seat already sold.
var body = []byte(`{"type":"https://fluxorder.io/problems/ticket_sold","title":"Ticket sold","status":409,"detail":"this ticket is already sold","code":"ticket_sold"}` + "\n")

func main() {
	listen := flag.String("listen", "127.0.0.1:8081", "address to serve on")
	flag.Parse()
	if err := run(*listen); err != nil {
		fmt.Fprintln(os.Stderr, "nullserver:", err)
		os.Exit(1)
	}
}

func run(listen string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	// Header values are built once and assigned directly, so a request costs
	// no header canonicalisation or formatting.
	contentType := []string{"application/problem+json"}
	contentLength := []string{strconv.Itoa(len(body))}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			h := w.Header()
			h["Content-Type"] = contentType
			h["Content-Length"] = contentLength
			w.WriteHeader(http.StatusConflict)
			_, _ = w.Write(body)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	fmt.Fprintf(os.Stderr, "nullserver: answering 409 ticket_sold on http://%s\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
