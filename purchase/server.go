package purchase

import (
	"context"
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

	"github.com/flux-order/flux-order/purchase/orderstore"
	"github.com/flux-order/flux-order/purchase/seatlock"
	"github.com/flux-order/flux-order/purchase/statusreport"
)

const (
	// shutdownGrace is how long in-flight purchases get after SIGTERM; it
	// stays under Kubernetes' default 30 s termination grace period.
	shutdownGrace = 25 * time.Second
)

// NewRedis returns a client whose every call is bounded, so that a dead
// Redis turns into a quick 503.
func NewRedis(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:         addr,
		DialTimeout:  time.Second,
		ReadTimeout:  500 * time.Millisecond,
		WriteTimeout: 500 * time.Millisecond,
		PoolTimeout:  time.Second,
		MaxRetries:   3, // safe: lock acquisition is idempotent per token (see seatlock.Acquire)
		PoolSize:     64,
		// Fail a dial once rather than queueing buyers behind retries: the
		// buyer gets a 503 and retries on their side.
		DialerRetries:      1,
		DialerRetryTimeout: 50 * time.Millisecond,
	})
}

// slogRedisLogger sends go-redis's internal messages (one per failed dial
// while Redis is down) to debug level: /readyz and the 503s already say it.
type slogRedisLogger struct{ log *slog.Logger }

func (l slogRedisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, fmt.Sprintf(format, v...), "component", "go-redis")
}

// Start connects to the sale's dependencies, migrates and seeds the
// database, and returns a ready Service. It waits for Postgres (a sale's pods
// usually start before its database is ready) until ctx ends.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (*Service, func(), error) {
	store, err := orderstore.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, nil, err
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
	if err := store.Seed(ctx, cfg.Tickets); err != nil {
		store.Close()
		return nil, nil, fmt.Errorf("seed %d tickets: %w", cfg.Tickets, err)
	}
	redis.SetLogger(slogRedisLogger{log})
	rdb := NewRedis(cfg.RedisAddr)
	svc := NewService(cfg, seatlock.New(rdb, cfg.Sale, cfg.LockTTL), store, log)
	closeAll := func() {
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
	counts := func(ctx context.Context) (int64, int64, error) {
		a, err := svc.Availability(ctx)
		return a.Tickets, a.Sold, err
	}
	return statusreport.New(rc, cfg.Namespace, cfg.Sale, identity, counts, log)
}

// Run serves the purchase API until ctx ends (SIGTERM), then stops accepting,
// lets in-flight purchases finish and returns.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	svc, closeAll, err := Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer closeAll()
	return Serve(ctx, svc, log)
}

// Serve serves a started Service on its configured addresses until ctx
// ends, then drains: /readyz fails, listeners close, in-flight purchases
// finish (up to shutdownGrace).
func Serve(ctx context.Context, svc *Service, log *slog.Logger) error {
	cfg := svc.cfg

	servers := []*http.Server{{Addr: cfg.Listen, Handler: svc.Handler(), ReadHeaderTimeout: 5 * time.Second}}
	if cfg.MetricsListen != "" && cfg.MetricsListen != cfg.Listen {
		servers = append(servers, &http.Server{Addr: cfg.MetricsListen, Handler: svc.MetricsHandler(), ReadHeaderTimeout: 5 * time.Second})
	}

	g, gctx := errgroup.WithContext(ctx)
	if cfg.ReportStatus {
		r, err := newReporter(cfg, svc, log)
		if err != nil {
			return err
		}
		g.Go(func() error { r.Run(gctx); return nil })
		g.Go(func() error {
			r.Follow(gctx, func(s statusreport.Schedule) {
				svc.SetSchedule(Schedule{Paused: s.Paused, StartsAt: s.StartsAt, EndsAt: s.EndsAt})
			})
			return nil
		})
	}
	for _, srv := range servers {
		ln, err := net.Listen("tcp", srv.Addr)
		if err != nil {
			return err
		}
		log.Info("serving", "addr", ln.Addr().String(), "sale", cfg.Sale, "tickets", cfg.Tickets)
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		svc.draining.Store(true)
		log.Info("shutting down: finishing in-flight purchases")
		sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		var errs []error
		for _, srv := range servers {
			errs = append(errs, srv.Shutdown(sctx))
		}
		return errors.Join(errs...)
	})
	return g.Wait()
}
