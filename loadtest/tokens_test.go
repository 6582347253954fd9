package loadtest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/buyerauth"
	"github.com/flux-order/flux-order/purchase/buyerauth/buyerauthtest"
	"github.com/flux-order/flux-order/purchase/waitingroom"
)

// withIdentity turns buyer identity on for a sale, trusting key.
func withIdentity(t *testing.T, key *buyerauthtest.Key) func(*purchase.Config) {
	file := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(file, buyerauthtest.JWKS(key), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(c *purchase.Config) {
		c.BuyerJWKSFile = file
		c.BuyerAuth = buyerauth.Settings{Issuer: "https://id.example.com/", Audiences: []string{"lt"}}
	}
}

// Against a sale with buyer identity, each scenario sends every buyer's own
// token (and the pass in Flux-Order-Pass): the sale sells out, nothing is
// refused, the audit is exact. Without tokens every purchase is refused.
func TestTokens_ScenariosAgainstASaleWithIdentity(t *testing.T) {
	ctx := t.Context()
	// The key as --jwt-key reads it.
	key := buyerauthtest.NewKey("lt-key")
	keyFile := filepath.Join(t.TempDir(), "key.jwk")
	if err := os.WriteFile(keyFile, key.PrivateJWK(), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens, err := LoadTokens(keyFile, "https://id.example.com/", "lt", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadTokens(keyFile, "", "lt", 0); err == nil {
		t.Fatal("LoadTokens without an issuer")
	}

	cases := []struct {
		name    string
		seats   int64
		opts    func(*purchase.Config)
		cfg     Config
		created int64
	}{
		{"sell-out", 40, func(*purchase.Config) {},
			Config{Scenario: SellOut, Buyers: 20, Concurrency: 8, UntilSoldOut: true, Duration: time.Minute}, 40},
		{"queue", 30, func(c *purchase.Config) { c.WaitingRoom = waitingroom.Settings{AdmitPerSecond: 200} },
			Config{Scenario: Queue, Buyers: 60, Concurrency: 16, Duration: time.Minute}, 30},
		{"hold-confirm", 30, func(c *purchase.Config) { c.HoldTTL = time.Minute },
			Config{Scenario: HoldConfirm, Buyers: 20, Concurrency: 8, UntilSoldOut: true, Duration: time.Minute,
				ThinkTime: 10 * time.Millisecond, ConfirmShare: 0.6, ReleaseShare: 1}, 30},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			url, dbURL := startSale(t, c.seats, withIdentity(t, key), c.opts)
			cfg := c.cfg
			cfg.URL, cfg.Seat, cfg.Timeout, cfg.Tokens = url, 1, 10*time.Second, tokens
			auditor, err := NewAuditor(ctx, dbURL)
			if err != nil {
				t.Fatal(err)
			}
			res, err := Run(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			s := res.Summary
			if got := s.Count(Created); got != c.created {
				t.Fatalf("%d created, want %d: %+v %+v %+v", got, c.created, s.Outcomes, s.Queue, s.Holds)
			}
			for _, o := range []Outcome{OtherAnswer, ServerError, TransportError} {
				if n := s.Count(o); n != 0 {
					t.Fatalf("%d %v (e.g. %s)", n, o, s.Outcomes[o.Key()].Example)
				}
			}
			if s.Holds != nil && (s.Holds.Errors != 0 || s.Holds.Released == 0) {
				t.Fatalf("holds: %+v (releases need the buyer's token)", s.Holds)
			}
			r := auditor.Check(ctx, res.Created, func(ctx context.Context) (Availability, error) { return FetchAvailability(ctx, cfg) }, true)
			if !r.OK || r.NewOrders != c.created {
				t.Fatalf("audit: %+v", r)
			}
		})
	}

	t.Run("without tokens nothing is bought", func(t *testing.T) {
		url, _ := startSale(t, 10, withIdentity(t, key))
		res, err := Run(ctx, Config{URL: url, Scenario: SellOut, Seat: 1, Buyers: 5, Concurrency: 2, Requests: 20, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if s := res.Summary; s.Count(Created) != 0 || s.Count(OtherAnswer) != 20 {
			t.Fatalf("without tokens: %+v", s.Outcomes)
		}
	})
}
