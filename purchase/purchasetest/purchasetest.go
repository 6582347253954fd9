// Package purchasetest is the one harness that runs real sales for tests,
// benchmarks and local tools: purchase pods (package purchase) over a real
// redis-server and PostgreSQL (package testservers), each sale with its own
// database and Redis ACL user, served over HTTP on free loopback ports with
// the production server's limits.
package purchasetest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/seatlock"
)

// The servers of this test binary, started by Main.
var (
	redisSrv *testservers.Redis
	pgSrv    *testservers.Postgres
)

// Main starts the test binary's redis-server and PostgreSQL, runs its tests
// and exits; after, if given, runs once the tests are done. A missing
// server binary fails the package with the command that installs it.
func Main(m *testing.M, after ...func()) {
	code := testservers.Main(m, &redisSrv, &pgSrv)
	for _, f := range after {
		f()
	}
	if durableSrv != nil {
		_ = durableSrv.Close()
	}
	os.Exit(code)
}

// Redis and Postgres are the servers Main started.
func Redis() *testservers.Redis       { return redisSrv }
func Postgres() *testservers.Postgres { return pgSrv }

var (
	durableOnce sync.Once
	durableSrv  *testservers.Postgres
	durableErr  error
)

// Durable is a second PostgreSQL with fsync and synchronous commit on, as
// a sale's own (Postgres runs with fsync off for speed), started on first
// use: the tests of what a commit survives (a restart mid-batch) run on it.
func Durable(t testing.TB) *testservers.Postgres {
	t.Helper()
	durableOnce.Do(func() { durableSrv, durableErr = testservers.StartPostgresDurable() })
	if durableErr != nil {
		t.Fatal(durableErr)
	}
	return durableSrv
}

var saleSeq atomic.Int64

// NewConfig returns the config of a new sale named after prefix, with its
// own database on pg and its own ACL user on rdb (rdb's address when it
// runs without ACLs), ready to Start.
func NewConfig(ctx context.Context, rdb *testservers.Redis, pg *testservers.Postgres, prefix string, tickets int64) (purchase.Config, error) {
	name := fmt.Sprintf("%s-%d", prefix, saleSeq.Add(1))
	dbURL, err := pg.CreateDatabase(ctx, name)
	if err != nil {
		return purchase.Config{}, fmt.Errorf("create the sale's database: %w", err)
	}
	cfg := purchase.Config{Sale: name, Tickets: tickets, DatabaseURL: dbURL,
		Listen: "127.0.0.1:0", LockTTL: 5 * time.Second, SaleSecret: "test-secret-of-" + name + "-0123456789abcdefghij",
		AdminToken: "test-admin-token-of-" + name + "-0123456789abcdefghij"}
	if cfg.RedisURL, err = rdb.PurchaseURL(name); err != nil {
		return purchase.Config{}, fmt.Errorf("create the sale's redis user: %w", err)
	}
	return cfg, nil
}

// Serve starts a pod on cfg and serves its API on a free loopback port with
// the production server's limits. stop ends the streams, the server and
// the pod's connections.
func Serve(ctx context.Context, cfg purchase.Config, log *slog.Logger) (svc *purchase.Service, url string, stop func(), err error) {
	svc, closeAll, err := purchase.Start(ctx, cfg, log)
	if err != nil {
		return nil, "", nil, fmt.Errorf("start the pod: %w", err)
	}
	srv := httptest.NewUnstartedServer(svc.Handler())
	purchase.ConfigureServer(srv.Config)
	srv.Start()
	return svc, srv.URL, func() { svc.Feed.Close(); srv.Close(); closeAll() }, nil
}

// Discard is a logger for pods whose logs nobody reads.
func Discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Sale is one sale with its own database and Redis user, served by one or
// more purchase pods over HTTP.
type Sale struct {
	T      testing.TB
	Cfg    purchase.Config
	Pods   []*Pod
	DB     *pgxpool.Pool // the sale's database, for audits
	Client *http.Client
}

// Pod is one purchase pod of a Sale.
type Pod struct {
	Svc *purchase.Service
	URL string
	// PrivateURL serves the pod's private port (metrics, the admin API).
	PrivateURL string
	// Stop kills the pod at once: its server, loops and connections end
	// (no drain). Once; the test's cleanup calls it too.
	Stop func()
}

// NewSale starts a sale of tickets seats with one pod; opts adjust its
// config before it starts.
func NewSale(t testing.TB, tickets int64, opts ...func(*purchase.Config)) *Sale {
	t.Helper()
	return NewSaleOn(t, pgSrv, tickets, opts...)
}

// NewSaleOn is NewSale with the sale's database on pg (Durable, say).
func NewSaleOn(t testing.TB, pg *testservers.Postgres, tickets int64, opts ...func(*purchase.Config)) *Sale {
	t.Helper()
	ctx := context.Background()
	cfg, err := NewConfig(ctx, redisSrv, pg, "sale", tickets)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	db, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	s := &Sale{T: t, Cfg: cfg, DB: db, Client: &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: 512, MaxConnsPerHost: 512},
		Timeout:   30 * time.Second,
	}}
	s.AddPod()
	return s
}

// AddPod starts one more purchase pod on the same sale; with a waiting room,
// once the pod has read the queue.
func (s *Sale) AddPod() *Pod {
	s.T.Helper()
	svc, url, stop, err := Serve(context.Background(), s.Cfg, Discard())
	if err != nil {
		s.T.Fatal(err)
	}
	stop = sync.OnceFunc(stop)
	s.T.Cleanup(stop)
	if s.Cfg.WaitingRoom.On() {
		// A pod answers joins and polls from its view of the queue: wait
		// for the first, as a readiness probe would.
		testservers.Eventually(s.T, 10*time.Second, 20*time.Millisecond, "the new pod's view of the queue", testservers.Holds(func() bool {
			_, ok := svc.Queue.View()
			return ok
		}))
	}
	private := httptest.NewServer(svc.MetricsHandler())
	s.T.Cleanup(private.Close)
	p := &Pod{Svc: svc, URL: url, PrivateURL: private.URL, Stop: func() { private.Close(); stop() }}
	s.Pods = append(s.Pods, p)
	return p
}

// AdminRedis is a client of the test binary's Redis as its admin, for the
// tests' own chaos (FLUSHALL).
func AdminRedis() *redis.Client {
	rdb, err := purchase.NewRedis(purchase.Config{RedisURL: redisSrv.AdminURL()})
	if err != nil {
		panic(err)
	}
	return rdb
}

// Locks is a lock space on the sale's Redis, as its purchase user: a
// stand-in for another buyer's pod holding a seat.
func (s *Sale) Locks() *seatlock.Locks {
	rdb, err := purchase.NewRedis(s.Cfg)
	if err != nil {
		s.T.Fatal(err)
	}
	s.T.Cleanup(func() { _ = rdb.Close() })
	return seatlock.New(rdb, s.Cfg.Sale, s.Cfg.LockTTL)
}

// AwaitSoldMarker waits until Redis marks seat sold: a pod writes the
// marker right after its 201 (checkout's markSold), and until then other
// pods answer ticket_locked.
func (s *Sale) AwaitSoldMarker(seat int64) {
	s.T.Helper()
	locks := s.Locks()
	testservers.Eventually(s.T, 5*time.Second, time.Millisecond, fmt.Sprintf("seat %d's sold marker in Redis", seat), func() error {
		r, ok, err := locks.Peek(context.Background(), seat)
		switch {
		case err != nil:
			return err
		case !ok || r.State != seatlock.Sold:
			return fmt.Errorf("the seat's key is %+v (present: %v)", r, ok)
		}
		return nil
	})
}

// Servers starts a redis-server and a PostgreSQL for a program (not a test
// binary: those use Main) and returns them with the function that stops
// both.
func Servers() (*testservers.Redis, *testservers.Postgres, func(), error) {
	rdb, err := testservers.StartRedis()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("start redis-server: %w", err)
	}
	pg, err := testservers.StartPostgres()
	if err != nil {
		_ = rdb.Close()
		return nil, nil, nil, fmt.Errorf("start postgres: %w", err)
	}
	return rdb, pg, func() { _ = pg.Close(); _ = rdb.Close() }, nil
}
