// Command localsale runs one sale's purchase API on this machine with its
// own throw-away redis-server and PostgreSQL (the test harness's), until
// Ctrl-C: the quickest way to try the API without a cluster.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/purchasetest"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address of the purchase API")
	tickets := flag.Int64("tickets", 100, "seats of the demo sale")
	flag.Parse()
	if err := run(*listen, *tickets); err != nil {
		fmt.Fprintln(os.Stderr, "localsale:", err)
		os.Exit(1)
	}
}

func run(listen string, tickets int64) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rdb, pg, stopServers, err := purchasetest.Servers()
	if err != nil {
		return err
	}
	defer stopServers()
	cfg, err := purchasetest.NewConfig(ctx, rdb, pg, "demo", tickets)
	if err != nil {
		return err
	}
	cfg.Listen, cfg.DisplayName = listen, "Flux-Order demo sale"
	fmt.Fprintf(os.Stderr, "redis %s, postgres %s\ntry: curl -X POST -d '{\"buyerId\":\"alice\"}' http://%s/v1/tickets/1/purchase\n", rdb.Addr, cfg.DatabaseURL, listen)
	fmt.Fprintf(os.Stderr, "the sale page: open http://%s/ in a browser\n", listen)
	return purchase.Run(ctx, cfg, slog.New(slog.NewTextHandler(os.Stderr, nil)))
}
