package cmd

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/flux-order/flux-order/internal/gctune"
	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/delivery"
	"github.com/flux-order/flux-order/purchase/frontdoor"
	"github.com/flux-order/flux-order/purchase/orderstore"
	"github.com/flux-order/flux-order/purchase/seatfeed"
	"github.com/flux-order/flux-order/purchase/waitingroom"
)

func newPurchaseCommand() *cobra.Command {
	cfg := purchase.Config{}
	var startsAt, endsAt, joinFrom, queueOrder string
	var retryUnit time.Duration
	var heapFloorMiB int
	var trustedProxies []string
	c := &cobra.Command{
		Use:   "purchase",
		Short: "Serve one flash sale's purchase API",
		Long: "Serve one flash sale's purchase API. Every flag can also be set by an environment\n" +
			"variable: --database-url is FLUX_ORDER_DATABASE_URL, and so on.",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := bindEnv(c.Flags()); err != nil {
				return err
			}
			var err error
			if cfg.Schedule.StartsAt, err = parseTime("starts-at", startsAt); err != nil {
				return err
			}
			if cfg.Schedule.EndsAt, err = parseTime("ends-at", endsAt); err != nil {
				return err
			}
			if cfg.WaitingRoom.JoinFrom, err = parseTime("join-from", joinFrom); err != nil {
				return err
			}
			cfg.WaitingRoom.Order = waitingroom.Order(queueOrder)
			cfg.Delivery.Schedule = delivery.DefaultSchedule(retryUnit)
			if cfg.FrontDoor.TrustedProxies, err = frontdoor.ParsePrefixes(trustedProxies); err != nil {
				return fmt.Errorf("--trusted-proxies: %w", err)
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			if heapFloorMiB < 0 || heapFloorMiB > 4096 {
				return fmt.Errorf("--gc-heap-floor-mib: %d is not in 0..4096", heapFloorMiB)
			}
			log := newLogger()
			gctune.Start(c.Context(), uint64(heapFloorMiB)<<20, log)
			return purchase.Run(c.Context(), cfg, log)
		},
	}
	f := c.Flags()
	f.StringVar(&cfg.Sale, "sale", "", "name of the FlashSale (required; prefixes the Redis keys)")
	f.Int64Var(&cfg.Tickets, "tickets", 0, "number of seats, numbered 1..N (required without --report-status)")
	f.StringVar(&cfg.RedisURL, "redis-url", "", "redis://user:password@host:port/0 (rediss:// for TLS) of the sale's Redis (this or --redis-addr)")
	f.StringVar(&cfg.RedisAddr, "redis-addr", "", "host:port of a password-less Redis (this or --redis-url)")
	f.StringVar(&cfg.RedisCAFile, "redis-ca-file", "", "PEM file of the CA of a rediss:// server (default: system roots)")
	f.StringVar(&cfg.RedisScheme, "redis-scheme", "", "redis or rediss: the scheme --redis-url must have, or exit (the operator sets it; default: either)")
	f.StringVar(&cfg.DatabaseURL, "database-url", "", "postgres:// URL of the sale's database (required; sslmode, sslrootcert honoured)")
	f.StringVar(&cfg.DatabaseSchema, "database-schema", "", "PostgreSQL schema of the sale's tables, created by the migrations (default: the database's own; set it when sales share a database)")
	f.StringVar(&cfg.SaleSecret, "sale-secret", "", "secret (required, 32+ bytes; the operator sets it from the sale's Secret) keying, each under its own derived key, order and hold ids derived from Idempotency-Keys and the waiting room's queue ids and passes")
	f.StringVar(&cfg.AdminToken, "admin-token", "", "bearer token (32+ bytes; the operator sets it from the sale's Secret, key admin-token) of the admin API on --metrics-listen: POST /admin/v1/orders/{id}/cancel (empty: admin API off)")
	f.IntVar(&cfg.WaitingRoom.AdmitPerSecond, "admit-per-second", 0, "waiting room: buyers admitted per second (0 = no waiting room)")
	f.IntVar(&cfg.WaitingRoom.MaxActiveBuyers, "max-active-buyers", 0, "waiting room: most admitted buyers shopping at once (0 = bounded by the inventory only)")
	f.StringVar(&queueOrder, "queue-order", "fifo", "waiting room: fifo, or random (who joined before --starts-at is shuffled at --starts-at)")
	f.StringVar(&joinFrom, "join-from", "", "waiting room: RFC 3339 time the queue opens (before --starts-at; default: open now)")
	f.IntVar(&cfg.WaitingRoom.ProofOfWork, "proof-of-work", 0, "waiting room: leading zero bits of the SHA-256 a join must solve first (0 = none, up to 28)")
	f.DurationVar(&cfg.WaitingRoom.PassTTL, "pass-ttl", waitingroom.DefaultPassTTL, "waiting room: how long an admitted buyer's pass lasts (30s..24h)")
	f.StringVar(&cfg.BuyerJWKSFile, "buyer-jwks-file", "", "buyer identity: JWKS document of the identity provider's public keys, re-read while running (the operator mounts spec.buyerAuth.jwt.jwksSecretRef here)")
	f.StringVar(&cfg.BuyerAuth.Issuer, "buyer-jwt-issuer", "", "buyer identity: the iss identity tokens must have; set, every purchase, hold, join and order lookup needs Authorization: Bearer <token> (with --report-status: the FlashSale's spec.buyerAuth.jwt)")
	f.StringArrayVar(&cfg.BuyerAuth.Audiences, "buyer-jwt-audience", nil, "buyer identity: an aud identity tokens may name (repeat for several)")
	f.StringVar(&cfg.Listen, "listen", ":8080", "address of the purchase API (/v1/* and the probes)")
	f.StringVar(&cfg.MetricsListen, "metrics-listen", ":9090", "address serving /metrics (empty: none)")
	f.BoolVar(&cfg.Pprof, "pprof", false, "also serve net/http/pprof's /debug/pprof/ on --metrics-listen (never on --listen); a CPU profile lasts less than 10s, the listener's write timeout")
	f.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", purchase.DefaultShutdownGrace, "on SIGTERM, time allowed until exit")
	f.DurationVar(&cfg.DrainDelay, "drain-delay", purchase.DefaultDrainDelay, "on SIGTERM, time /readyz fails before the listener closes (part of --shutdown-grace)")
	f.DurationVar(&cfg.LockTTL, "lock-ttl", 5*time.Second, "expiry of a seat lock (100ms..60s)")
	f.IntVar(&cfg.MaxStreams, "max-streams", seatfeed.DefaultMaxStreams, "most seat streams (GET /v1/events) open on this pod; beyond it 503 with Retry-After")
	f.IntVar(&cfg.FrontDoor.MaxStreamsPerClient, "max-streams-per-client", frontdoor.DefaultMaxStreamsPerClient, "most seat streams one client address keeps open on this pod; beyond it 429 too_many_requests (0 = no cap per client; spec.frontDoor overrides it)")
	f.IntVar(&cfg.FrontDoor.JoinsPerClientPerMinute, "joins-per-client-per-minute", frontdoor.DefaultJoinsPerClientPerMinute, "waiting-room joins one client address may make on this pod: that many at once, refilled at that many a minute; beyond it 429 too_many_requests (0 = no cap; spec.frontDoor overrides it)")
	f.StringSliceVar(&trustedProxies, "trusted-proxies", nil, "CIDRs of the proxies (the Ingress controller's pods) whose X-Forwarded-For/X-Real-IP names the client of the per-client caps (empty: the caps apply to direct requests only; spec.frontDoor overrides it)")
	f.IntVar(&cfg.Batching.Max, "confirm-batch-max", orderstore.DefaultBatchMax, "group commit: most purchases (or holds, or hold confirmations) one PostgreSQL statement and commit carries (1 = no batching)")
	f.DurationVar(&cfg.Batching.Window, "confirm-batch-window", orderstore.DefaultBatchWindow, "group commit: how long a batch that is not full may wait for more, only while another batch is in flight (0..5ms; a lone buyer never waits)")
	f.IntVar(&cfg.Batching.Flushers, "confirm-batch-flushers", orderstore.DefaultBatchFlushers, "group commit: purchase batches in flight at once, each on its own connection, the second and later only while a full batch waits (holds and hold confirmations: half each, rounded up)")
	f.IntVar(&cfg.MaxPerBuyer, "max-per-buyer", 0, "tickets one buyer may hold (0 = unlimited)")
	f.StringVar(&cfg.DisplayName, "display-name", "", "the event's name on the sale page (default: --sale; with --report-status, the FlashSale's spec.displayName)")
	f.DurationVar(&cfg.HoldTTL, "hold-ttl", 0, "how long a checkout hold keeps a seat (1s..1h; 0 = holds off, one-step purchases only)")
	f.StringVar(&startsAt, "starts-at", "", "RFC 3339 time before which purchases are refused")
	f.StringVar(&endsAt, "ends-at", "", "RFC 3339 time from which purchases are refused")
	f.BoolVar(&cfg.Schedule.Paused, "paused", false, "refuse every purchase with 503 sale_paused")
	f.BoolVar(&cfg.ReportStatus, "report-status", false, "compete (Lease) to report sold/available into the FlashSale's status, and take tickets, window, paused, max-per-buyer, lock-ttl and hold-ttl from the FlashSale (at start and live, overriding those flags)")
	f.StringVar(&cfg.Namespace, "namespace", "", "namespace of the FlashSale (with --report-status)")
	f.StringVar(&cfg.Delivery.File, "webhooks-file", "", "the operator's resolved webhooks (api/v1alpha1.WebhooksFile), re-read when it changes (empty or missing: no webhooks; events are still recorded)")
	f.DurationVar(&retryUnit, "webhook-retry-unit", time.Second, "unit of the webhook retry schedule: waits of 1, 2, 4 ... up to 3600 units, for 86400 units (1s: 24 h; 1ms scales it down for tests)")
	f.DurationVar(&cfg.Delivery.AttemptTimeout, "webhook-timeout", 10*time.Second, "how long one delivery attempt may take; longer is a failure, retried")
	f.IntVar(&heapFloorMiB, "gc-heap-floor-mib", gctune.DefaultFloor>>20, "heap size (MiB) below which the garbage collector waits instead of collecting every few MB of a small live heap (0 = Go's default; at most a quarter of the container's memory limit; GOGC in the environment overrides it; GOMEMLIMIT defaults to 90% of that limit)")
	f.StringVar(&cfg.PodName, "pod-name", "", "this pod's name, its identity in the reporter election (default: hostname)")
	return c
}

func parseTime(flag, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("--%s: %q is not an RFC 3339 time (like 2027-01-10T10:00:00Z)", flag, v)
	}
	return t, nil
}
