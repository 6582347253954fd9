package cmd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/flux-order/flux-order/loadtest"
)

func newLoadtestCommand() *cobra.Command {
	cfg := loadtest.Config{}
	var (
		scenario   string
		jsonOut    bool
		auditURL   string
		auditExact bool
		jwt        struct{ key, issuer, audience string }
	)
	c := &cobra.Command{
		Use:   "loadtest",
		Short: "Send purchase load to a sale's API and audit the result",
		Long: "Send purchase load to a sale's API (a local server, a port-forward or an Ingress), print\n" +
			"counts and latency percentiles per outcome, and optionally audit the sale's Postgres.\n" +
			"Closed model by default (--concurrency workers); --rate switches to the open model.\n" +
			"--duration and/or --requests bound the test. Every flag can also be set by an environment\n" +
			"variable: --url is FLUX_ORDER_URL, and so on.\n\n" +
			"Scenarios: hot-seat (every request on --seat), sell-out (every seat of --seats once per round, scrambled),\n" +
			"any-seat (POST /v1/purchase), mixed (per 10 requests: 5 sell-out, 3 hot-seat, 2 any-seat),\n" +
			"queue (--buyers join the waiting room, poll as Retry-After says, buy any seat with their pass;\n" +
			"--rate is then joins/s, --concurrency the connections; reports time in queue, admitted rate, FIFO inversions),\n" +
			"hold-confirm (--concurrency buyers each hold a seat of --seats in sell-out's walk, think --think-time, then\n" +
			"confirm with probability --confirm-share, else release the hold with probability --release-share or let it\n" +
			"expire; outcomes and latency are the confirmations, the holds line tells the rest; the sale needs a holdTTL).",
		Example: "  flux-order loadtest --url http://127.0.0.1:8080 --scenario hot-seat --concurrency 64 --duration 10s\n" +
			"  flux-order loadtest --url http://127.0.0.1:8080 --scenario sell-out --until-sold-out --duration 5m \\\n" +
			"    --audit-database-url postgres://user:pass@127.0.0.1:5432/demo\n" +
			"  flux-order loadtest --url http://127.0.0.1:18080 --host demo.sales.example --rate 2000 --duration 30s --json\n" +
			"  flux-order loadtest --url http://127.0.0.1:8080 --scenario queue --buyers 5000 --concurrency 256 --duration 5m\n" +
			"  flux-order loadtest --url http://127.0.0.1:8080 --scenario hold-confirm --concurrency 64 --think-time 2s \\\n" +
			"    --confirm-share 0.6 --release-share 0.5 --until-sold-out --duration 5m --audit-database-url postgres://...",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := bindEnv(c.Flags()); err != nil {
				return err
			}
			cfg.Scenario = loadtest.Scenario(scenario)
			if err := cfg.Validate(); err != nil {
				return err
			}
			if jwt.key != "" {
				var err error
				if cfg.Tokens, err = loadtest.LoadTokens(jwt.key, jwt.issuer, jwt.audience, 0); err != nil {
					return err
				}
			}
			if auditURL != "" {
				if err := loadtest.CheckDatabaseURL(auditURL); err != nil {
					return err
				}
			}
			return runLoadtest(c, cfg, jsonOut, auditURL, auditExact)
		},
	}
	f := c.Flags()
	f.StringVar(&cfg.URL, "url", "", "base URL of the purchase API, like http://127.0.0.1:8080 (required)")
	f.StringVar(&cfg.Host, "host", "", "Host header to send instead of the URL's (an Ingress reached by address)")
	f.StringVar(&scenario, "scenario", string(loadtest.HotSeat), "hot-seat, sell-out, any-seat, mixed, queue or hold-confirm")
	f.Int64Var(&cfg.Seat, "seat", 1, "the seat of hot-seat (and of mixed's hot-seat share)")
	f.Int64Var(&cfg.Seats, "seats", 0, "seats 1..N that sell-out, mixed and hold-confirm pick from (default: tickets from GET /v1/availability)")
	f.IntVar(&cfg.Buyers, "buyers", loadtest.DefaultBuyers, "distinct buyers buyer-1..buyer-N, taking turns")
	f.IntVar(&cfg.Concurrency, "concurrency", 0, fmt.Sprintf("connections: workers in the closed model, most requests in flight with --rate (default %d, or %d with --rate)",
		loadtest.DefaultClosedConcurrency, loadtest.DefaultOpenConcurrency))
	f.Float64Var(&cfg.Rate, "rate", 0, "open model: requests/s sent on a clock whatever the answers (latency counts from the scheduled time)")
	f.DurationVar(&cfg.Duration, "duration", 0, "stop after this long (this and/or --requests is required)")
	f.Int64Var(&cfg.Requests, "requests", 0, "stop after this many requests (this and/or --duration is required)")
	f.BoolVar(&cfg.UntilSoldOut, "until-sold-out", false, "also stop once the sale is sold out (sell-out, any-seat, mixed, hold-confirm)")
	f.DurationVar(&cfg.Timeout, "timeout", loadtest.DefaultTimeout, "bound of one request, connecting included")
	f.BoolVar(&cfg.Keyless, "keyless", false, "send no Idempotency-Key and retry nothing (default: each purchase has its own key and is retried with it while its outcome is in doubt, so the audit stays exact after an outage)")
	f.BoolVar(&cfg.QueueHolds, "queue-holds", false, "queue: admitted buyers hold any seat, think --think-time, then confirm (instead of one purchase)")
	f.DurationVar(&cfg.ThinkTime, "think-time", time.Second, "hold-confirm: time between a hold and its confirmation or abandonment")
	f.Float64Var(&cfg.ConfirmShare, "confirm-share", 0.7, "hold-confirm: share of holds confirmed (0..1); the others are abandoned")
	f.Float64Var(&cfg.ReleaseShare, "release-share", 0.5, "hold-confirm: share of abandoned holds released with DELETE (0..1); the others expire")
	f.StringVar(&jwt.key, "jwt-key", "", "a sale with buyer identity (spec.buyerAuth): private JWK to sign each buyer's identity token with (sub buyer-N); its public key must be in the sale's JWKS")
	f.StringVar(&jwt.issuer, "jwt-issuer", "", "with --jwt-key: the tokens' iss (the sale's spec.buyerAuth.jwt.issuer)")
	f.StringVar(&jwt.audience, "jwt-audience", "", "with --jwt-key: the tokens' aud (one of the sale's spec.buyerAuth.jwt.audiences)")
	f.BoolVar(&jsonOut, "json", false, "print the summary as one JSON object on stdout")
	f.StringVar(&auditURL, "audit-database-url", "", "postgres:// URL of the sale's database: audit it after the test")
	f.BoolVar(&auditExact, "audit-exact", true, "the audit requires new orders = 201s plus the orders resolved after a 503 (false: at least those, as with --keyless after an outage)")
	return c
}

func runLoadtest(c *cobra.Command, cfg loadtest.Config, jsonOut bool, auditURL string, auditExact bool) error {
	ctx := c.Context()
	var auditor *loadtest.Auditor
	if auditURL != "" {
		var err error
		if auditor, err = loadtest.NewAuditor(ctx, auditURL); err != nil {
			return err
		}
	}
	stderr := c.ErrOrStderr()
	terminal := isTerminal(stderr)
	cfg.Progress = loadtest.NewProgressPrinter(stderr, terminal)
	cfg.ProgressEvery = 5 * time.Second
	if terminal {
		cfg.ProgressEvery = 250 * time.Millisecond
	}

	res, err := loadtest.Run(ctx, cfg)
	if err != nil {
		return err
	}
	s := res.Summary
	if auditor != nil && !s.Interrupted() {
		report := auditor.Check(ctx, res.Created, func(ctx context.Context) (loadtest.Availability, error) {
			return loadtest.FetchAvailability(ctx, cfg)
		}, auditExact)
		s.Audit = &report
	}
	write := loadtest.WriteText
	if jsonOut {
		write = loadtest.WriteJSON
	}
	if err := write(c.OutOrStdout(), s); err != nil {
		return err
	}
	switch {
	case s.Interrupted() && auditor != nil:
		return errors.New("interrupted: audit skipped")
	case s.Interrupted():
		return errors.New("interrupted")
	case s.Audit != nil && !s.Audit.OK:
		return fmt.Errorf("audit failed: %s", s.Audit.Problems[0])
	}
	return nil
}

func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
