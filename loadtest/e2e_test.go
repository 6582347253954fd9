package loadtest

import (
	"context"
	"testing"
	"time"

	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/purchasetest"
)

// startSale serves a real sale (one purchase pod over the package's real
// Redis and PostgreSQL, purchasetest's harness) and returns its URL and
// database URL; opts adjust its config.
func startSale(t *testing.T, tickets int64, opts ...func(*purchase.Config)) (url, dbURL string) {
	t.Helper()
	s := purchasetest.NewSale(t, tickets, opts...)
	return s.Pods[0].URL, s.Cfg.DatabaseURL
}

func TestEndToEnd_LoadAgainstARealSale_IsAnsweredAndAudited(t *testing.T) {
	cases := []struct {
		name        string
		scenario    Scenario
		tickets     int64
		bound       func(*Config)
		wantCreated func(tickets int64) bool
		wantStop    string
	}{
		{"a sell-out of 200 random seats sells every seat once", SellOut, 200,
			func(c *Config) { c.UntilSoldOut, c.Duration = true, 2*time.Minute },
			func(n int64) bool { return n == 200 }, "sold-out"},
		{"any-seat buyers sell out 150 seats", AnySeat, 150,
			func(c *Config) { c.UntilSoldOut, c.Duration = true, 2*time.Minute },
			func(n int64) bool { return n == 150 }, "sold-out"},
		{"a hot seat is sold once whatever the storm", HotSeat, 10,
			func(c *Config) { c.Requests = 1000 },
			func(n int64) bool { return n == 1 }, "requests"},
		{"a mixed crowd never oversells", Mixed, 50,
			func(c *Config) { c.Requests = 2000 },
			func(n int64) bool { return n >= 1 && n <= 50 }, "requests"},
		{"an open-model sell-out is audited too", SellOut, 100,
			func(c *Config) { c.Rate, c.Concurrency, c.UntilSoldOut, c.Duration = 2000, 64, true, 2*time.Minute },
			func(n int64) bool { return n == 100 }, "sold-out"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := t.Context()
			url, dbURL := startSale(t, c.tickets)
			auditor, err := NewAuditor(ctx, dbURL)
			if err != nil {
				t.Fatal(err)
			}
			cfg := Config{URL: url, Scenario: c.scenario, Seat: 1, Buyers: 50, Concurrency: 16, Timeout: 10 * time.Second}
			c.bound(&cfg)
			res, err := Run(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			s := res.Summary
			if got := s.Count(Created); !c.wantCreated(got) || s.StoppedBy != c.wantStop {
				t.Fatalf("expected the right number of 201s (of %d seats), stopped by %s; got %d, stopped by %s: %+v",
					c.tickets, c.wantStop, got, s.StoppedBy, s.Outcomes)
			}
			for _, o := range []Outcome{OtherAnswer, ServerError, TransportError} {
				if n := s.Count(o); n != 0 {
					t.Fatalf("expected no %v, got %d (e.g. %s)", o, n, s.Outcomes[o.Key()].Example)
				}
			}
			r := auditor.Check(ctx, res.Created, func(ctx context.Context) (Availability, error) { return FetchAvailability(ctx, cfg) }, true)
			if !r.OK || r.NewOrders != s.Count(Created) {
				t.Fatalf("expected the audit to pass with %d new orders, got %+v", s.Count(Created), r)
			}
		})
	}
}
