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
	"path/filepath"
	"syscall"
	"time"

	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/buyerauth"
	"github.com/flux-order/flux-order/purchase/buyerauth/buyerauthtest"
	"github.com/flux-order/flux-order/purchase/purchasetest"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address of the purchase API")
	tickets := flag.Int64("tickets", 100, "seats of the demo sale")
	buyerAuth := flag.Bool("buyer-auth", false, "buyer identity on: make a signing key and its JWKS file, print a page link with a signed-in buyer's token and the loadtest flags")
	flag.Parse()
	if err := run(*listen, *tickets, *buyerAuth); err != nil {
		fmt.Fprintln(os.Stderr, "localsale:", err)
		os.Exit(1)
	}
}

func run(listen string, tickets int64, buyerAuth bool) error {
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
	if buyerAuth {
		if err := withBuyerAuth(&cfg, listen); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "redis %s, postgres %s\ntry: curl -X POST -d '{\"buyerId\":\"alice\"}' http://%s/v1/tickets/1/purchase\n", rdb.Addr, cfg.DatabaseURL, listen)
	fmt.Fprintf(os.Stderr, "the sale page: open http://%s/ in a browser\n", listen)
	return purchase.Run(ctx, cfg, slog.New(slog.NewTextHandler(os.Stderr, nil)))
}

// withBuyerAuth plays the platform's identity provider: a key whose JWKS
// the sale trusts (a file, as a mounted Secret would be), a link to the
// page signed in as alice, and the key for flux-order loadtest --jwt-key.
func withBuyerAuth(cfg *purchase.Config, listen string) error {
	dir, err := os.MkdirTemp("", "localsale-buyer-auth-")
	if err != nil {
		return err
	}
	const issuer, audience = "https://id.localsale.example/", "demo"
	key := buyerauthtest.NewKey("demo-1")
	cfg.BuyerJWKSFile = filepath.Join(dir, "jwks.json")
	keyFile := filepath.Join(dir, "key.jwk")
	if err := os.WriteFile(cfg.BuyerJWKSFile, buyerauthtest.JWKS(key), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, key.PrivateJWK(), 0o600); err != nil {
		return err
	}
	cfg.BuyerAuth = buyerauth.Settings{Issuer: issuer, Audiences: []string{audience}}
	fmt.Fprintf(os.Stderr, "buyer identity on (JWKS %s; rewrite it to rotate)\n", cfg.BuyerJWKSFile)
	fmt.Fprintf(os.Stderr, "the page signed in as alice: http://%s/#access_token=%s\n", listen, key.Token(issuer, audience, "alice", 12*time.Hour))
	fmt.Fprintf(os.Stderr, "load: flux-order loadtest --url http://%s --jwt-key %s --jwt-issuer %s --jwt-audience %s ...\n", listen, keyFile, issuer, audience)
	return nil
}
