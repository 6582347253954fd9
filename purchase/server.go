package purchase

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/client/config"

	"github.com/flux-order/flux-order/internal/flagerr"
	"github.com/flux-order/flux-order/purchase/buyerauth"
	"github.com/flux-order/flux-order/purchase/delivery"
	"github.com/flux-order/flux-order/purchase/orderstore"
	"github.com/flux-order/flux-order/purchase/seatlock"
	"github.com/flux-order/flux-order/purchase/statusreport"
)

// Defaults of the shutdown: the whole of it stays under Kubernetes' default
// 30 s termination grace period.
const (
	DefaultShutdownGrace = 25 * time.Second
	DefaultDrainDelay    = 5 * time.Second
)

// The API server's timeouts. A purchase body is at most 1 KiB and a
// purchase is bounded by checkout.Timeout, so a connection that takes longer
// to send its request, or to be answered, is stalled or malicious; cutting
// it also lets SIGTERM drain within the grace.
const (
	readHeaderTimeout = 2 * time.Second  // request line and headers
	ReadTimeout       = 5 * time.Second  // the whole request, body included
	writeTimeout      = 10 * time.Second // from the end of the headers to the end of the answer (> checkout.Timeout)
	idleTimeout       = 90 * time.Second // a keep-alive connection between requests (> the Ingress' 60 s upstream keep-alive)
	maxHeaderBytes    = 16 << 10         // larger headers get 431
)

// ConfigureServer sets the API server's limits (also used by the tests'
// servers, so they run what production runs).
func ConfigureServer(srv *http.Server) {
	srv.ReadHeaderTimeout = readHeaderTimeout
	srv.ReadTimeout = ReadTimeout
	srv.WriteTimeout = writeTimeout
	srv.IdleTimeout = idleTimeout
	srv.MaxHeaderBytes = maxHeaderBytes
}

// Redis client bounds (docs/purchase.md lists them): one dial attempt of at
// most 1 s, reads and writes of at most 0.5 s, at most 1 s waiting for a
// pooled connection. The client itself retries nothing (MaxRetries -1):
// package seatlock retries once the commands that are idempotent, and never
// the any-seat script.
const (
	redisDialTimeout = time.Second
	RedisIOTimeout   = 500 * time.Millisecond
	redisPoolTimeout = time.Second
	redisPoolSize    = 64
)

// NewRedis returns a client for the Redis of cfg (RedisURL, or RedisAddr
// without a password) whose every call is bounded, so that a dead Redis
// turns into a quick 503.
func NewRedis(cfg Config) (*redis.Client, error) {
	opt := &redis.Options{Addr: cfg.RedisAddr}
	if cfg.RedisURL != "" {
		var err error
		if opt, err = redis.ParseURL(cfg.RedisURL); err != nil {
			// The URL holds a password: never echo it.
			return nil, flagerr.New("redis-url", "is not a valid redis:// or rediss:// URL")
		}
	}
	if cfg.RedisCAFile != "" {
		pem, err := os.ReadFile(cfg.RedisCAFile)
		if err != nil {
			return nil, flagerr.New("redis-ca-file", "%v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, flagerr.New("redis-ca-file", "%s holds no PEM certificate", cfg.RedisCAFile)
		}
		opt.TLSConfig.RootCAs = pool // ParseURL made TLSConfig for rediss://
	}
	opt.DialTimeout = redisDialTimeout
	opt.ReadTimeout = RedisIOTimeout
	opt.WriteTimeout = RedisIOTimeout
	opt.PoolTimeout = redisPoolTimeout
	opt.PoolSize = redisPoolSize
	opt.MaxRetries = -1
	opt.DisableIdentity = true // no CLIENT SETINFO: not in redisacl.Commands
	// One dial attempt rather than queueing buyers behind dial retries:
	// the buyer gets a 503 and retries on their side.
	opt.DialerRetries = 1
	opt.DialerRetryTimeout = 50 * time.Millisecond
	return redis.NewClient(opt), nil
}

// slogRedisLogger sends go-redis's internal messages (one per failed dial
// while Redis is down) to debug level: the 503 answers and their log line
// (at most one a second) already say it.
type slogRedisLogger struct{ log *slog.Logger }

func (l slogRedisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, fmt.Sprintf(format, v...), "component", "go-redis")
}

// warnClockSkew logs a warning when this pod's clock runs ahead of
// PostgreSQL's by half of orderstore.CommitSkewMargin or more: from the
// whole margin, a keyed order could commit after its buyer was answered
// 503 and GET /v1/orders/{id} had answered its 404 (docs/purchase.md).
func warnClockSkew(ctx context.Context, store *orderstore.Store, log *slog.Logger) {
	off, unc, err := store.ClockOffset(ctx)
	switch {
	case err != nil:
		log.Warn("could not compare this pod's clock with the database's", "err", err)
	case -off-unc >= orderstore.CommitSkewMargin/2:
		log.Warn("this pod's clock runs ahead of the database's: keep the cluster's clocks synchronised (NTP)",
			"ahead", (-off).Round(time.Millisecond), "uncertainty", unc.Round(time.Millisecond),
			"margin", orderstore.CommitSkewMargin)
	}
}

// Start connects to the sale's dependencies, migrates and seeds the
// database, and returns a ready Service. It waits for Postgres (a sale's pods
// usually start before its database is ready) until ctx ends.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (*Service, func(), error) {
	batching := cfg.Batching
	if batching == (orderstore.Batching{}) {
		batching = orderstore.DefaultBatching()
	}
	store, err := orderstore.OpenInSchema(ctx, cfg.DatabaseURL, cfg.DatabaseSchema, orderstore.WithBatching(batching))
	if err != nil {
		return nil, nil, fmt.Errorf("open the order database: %w", err)
	}
	for attempt := 1; ; attempt++ {
		err = store.Migrate(ctx)
		if err == nil {
			break
		}
		log.Info("waiting for the database", "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			store.Close()
			return nil, nil, fmt.Errorf("database never became ready: %w", err)
		case <-time.After(min(time.Duration(attempt)*time.Second, 5*time.Second)):
		}
	}
	if err := store.Seed(ctx, cfg.Tickets); errors.Is(err, orderstore.ErrShrink) {
		// The database holds more seats than asked for: a FlashSale
		// re-created with fewer tickets over its retained data. Restarting
		// would not help; serve seats 1..Tickets (they all exist) and let
		// the report of the larger inventory tell the operator, which marks
		// the sale Degraded and says why.
		log.Warn("the database holds more seats than --tickets; serving only 1..tickets", "tickets", cfg.Tickets, "err", err)
	} else if err != nil {
		store.Close()
		return nil, nil, fmt.Errorf("seed %d tickets: %w", cfg.Tickets, err)
	}
	warnClockSkew(ctx, store, log)
	redis.SetLogger(slogRedisLogger{log})
	rdb, err := NewRedis(cfg)
	if err != nil {
		store.Close()
		return nil, nil, err // a *flagerr.Error: it names its flag
	}
	identity, err := buyerauth.New(cfg.BuyerJWKSFile, cfg.BuyerAuth, log)
	if err != nil {
		_ = rdb.Close()
		store.Close()
		return nil, nil, flagerr.New("buyer-jwks-file", "%v", err)
	}
	svc := newService(cfg, seatlock.New(rdb, cfg.Sale, cfg.LockTTL), store, identity, log)
	dcfg := cfg.Delivery
	if dcfg.ID == "" {
		dcfg.ID = cfg.PodName
	}
	dcfg.Sale = cfg.Sale
	dcfg.Facts = func(ctx context.Context) (delivery.SaleFacts, error) {
		a, err := svc.Checkout.Availability(ctx)
		sch := svc.Checkout.Schedule()
		return delivery.SaleFacts{StartsAt: sch.StartsAt, EndsAt: sch.EndsAt, Tickets: a.Tickets, Sold: a.Sold}, err
	}
	if svc.Delivery, err = delivery.New(dcfg, store.Pool(), store.Schema(), svc.registry, log); err != nil {
		_ = rdb.Close()
		store.Close()
		return nil, nil, fmt.Errorf("webhook delivery: %w", err)
	}
	// The pod's loops idle while there is nothing to do; they stop before
	// the connections close.
	lctx, stopLoops := context.WithCancel(context.Background())
	loopsStopped := svc.Run(lctx)
	closeAll := func() {
		stopLoops()
		loopsStopped()
		svc.Checkout.Wait() // sold markers behind the last answers
		_ = rdb.Close()
		store.Close()
	}
	return svc, closeAll, nil
}

// newReporter reports this sale's counts from inside the cluster (or from
// the kubeconfig when run outside).
func newReporter(cfg Config, svc *Service, log *slog.Logger) (*statusreport.Reporter, error) {
	rc, err := ctrlconfig.GetConfig()
	if err != nil {
		return nil, fmt.Errorf("--report-status needs access to the Kubernetes API: %w", err)
	}
	identity := cfg.PodName
	if identity == "" {
		identity, _ = os.Hostname()
	}
	counts := func(ctx context.Context) (statusreport.Counts, error) {
		a, err := svc.Checkout.Availability(ctx)
		c := statusreport.Counts{Tickets: a.Tickets, Sold: a.Sold, Held: a.Held}
		if err == nil {
			c.Cancelled, err = svc.Checkout.Cancelled(ctx)
		}
		if svc.Delivery != nil {
			c.Delivery = svc.Delivery.Status()
		}
		if q, ok := svc.Queue.Counts(); ok {
			c.Queue = &statusreport.QueueCounts{Waiting: q.Waiting, Admitted: q.Admitted, ServingPosition: q.ServingPosition}
		}
		return c, err
	}
	return statusreport.New(rc, cfg.Namespace, cfg.Sale, identity, counts, log)
}

// Run serves the purchase API until ctx ends (SIGTERM), then stops accepting,
// lets in-flight purchases finish and returns. With ReportStatus the live
// values (live.go) come from the FlashSale, read before seeding.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if cfg.ReportStatus {
		var err error
		if cfg, err = settingsFromFlashSale(ctx, cfg, log); err != nil {
			return fmt.Errorf("settings of the flashsale: %w", err)
		}
	}
	svc, closeAll, err := Start(ctx, cfg, log)
	if err != nil {
		return err // Start says what failed
	}
	defer closeAll()
	return Serve(ctx, svc, log)
}

// Serve serves a started Service on its configured addresses until ctx
// ends (SIGTERM), then drains within cfg.ShutdownGrace:
//  1. for cfg.DrainDelay, /readyz fails while everything is still served,
//     so the endpoints drop the pod before its listener closes;
//  2. the listeners close and in-flight purchases finish, each bounded by
//     checkout.Timeout; idle and stalled connections are cut (ReadTimeout);
//  3. whatever is still open when the grace ends is closed.
//
// It returns nil after a drain, also a forced one: an exit 0 tells
// Kubernetes the pod stopped as asked.
func Serve(ctx context.Context, svc *Service, log *slog.Logger) error {
	cfg := svc.cfg
	grace, drain := cfg.ShutdownGrace, cfg.DrainDelay
	if grace == 0 {
		grace, drain = DefaultShutdownGrace, min(drain, DefaultShutdownGrace/2)
	}

	api := &http.Server{Addr: cfg.Listen, Handler: svc.Handler()}
	ConfigureServer(api)
	api.RegisterOnShutdown(svc.Feed.Close) // the page's event streams would hold Shutdown
	servers := []*http.Server{api}
	if cfg.MetricsListen != "" {
		m := &http.Server{Addr: cfg.MetricsListen, Handler: svc.MetricsHandler()}
		ConfigureServer(m)
		servers = append(servers, m)
	}

	// Every listener is opened, and the reporter built, before anything
	// runs: a failure leaves nothing behind.
	lns := make([]net.Listener, 0, len(servers))
	closeListeners := func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}
	for _, srv := range servers {
		ln, err := net.Listen("tcp", srv.Addr)
		if err != nil {
			closeListeners()
			return fmt.Errorf("listen on %s: %w", srv.Addr, err)
		}
		lns = append(lns, ln)
	}
	var r *statusreport.Reporter
	if cfg.ReportStatus {
		var err error
		if r, err = newReporter(cfg, svc, log); err != nil {
			closeListeners()
			return fmt.Errorf("status reporter: %w", err)
		}
	}

	g, gctx := errgroup.WithContext(ctx)
	if r != nil {
		g.Go(func() error { r.Run(gctx); return nil })
		g.Go(func() error { r.Follow(gctx, svc.Apply); return nil })
	}
	for i, srv := range servers {
		ln := lns[i]
		log.Info("serving", "addr", ln.Addr().String(), "sale", cfg.Sale, "tickets", svc.Checkout.Tickets())
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve %s: %w", ln.Addr(), err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		deadline := time.Now().Add(grace)
		svc.draining.Store(true)
		if svc.Delivery != nil {
			svc.Delivery.Drain()
		}
		log.Info("shutting down: /readyz fails, still serving", "drainDelay", drain, "grace", grace)
		time.Sleep(drain)
		log.Info("shutting down: listeners closed, finishing in-flight purchases")
		sctx, cancel := context.WithDeadline(context.Background(), deadline)
		defer cancel()
		for _, srv := range servers {
			if err := srv.Shutdown(sctx); err != nil {
				log.Warn("grace period over: closing the connections still open", "err", err)
				_ = srv.Close()
			}
		}
		return nil
	})
	return g.Wait()
}
