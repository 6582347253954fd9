package purchase

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/flux-order/flux-order/internal/testservers"
)

// The real servers every test of this package uses, started once.
var (
	redisSrv *testservers.Redis
	pgSrv    *testservers.Postgres
)

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.fuzzworker"); f != nil && f.Value.String() == "true" {
		// A fuzzing worker runs only the fuzz target, which needs no
		// servers: starting a Redis and a PostgreSQL per worker would
		// starve the fuzzer.
		os.Exit(m.Run())
	}
	code := testservers.Main(m, &redisSrv, &pgSrv)
	closeBrowser() // the browser tests' Chromium, if they started it
	os.Exit(code)
}

var saleSeq atomic.Int64

// testSale is one sale with its own database and Redis keys, served by one
// or more purchase "pods" (Services) over HTTP.
type testSale struct {
	t      testing.TB
	cfg    Config
	pods   []*testPod
	db     *pgxpool.Pool // for audits
	client *http.Client
}

type testPod struct {
	svc *Service
	srv *httptest.Server
}

func newTestSale(t testing.TB, tickets int64, opts ...func(*Config)) *testSale {
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("sale-%d", saleSeq.Add(1))
	dbURL, err := pgSrv.CreateDatabase(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	redisURL, err := redisSrv.PurchaseURL(name)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Sale: name, Tickets: tickets, RedisURL: redisURL, DatabaseURL: dbURL,
		Listen: "127.0.0.1:0", LockTTL: 5 * time.Second, SaleSecret: "test-secret-" + name}
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
	s := &testSale{t: t, cfg: cfg, db: db, client: &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: 512, MaxConnsPerHost: 512},
		Timeout:   30 * time.Second,
	}}
	t.Cleanup(db.Close)
	s.addPod()
	return s
}

// addPod starts one more purchase service on the same sale.
func (s *testSale) addPod() *testPod {
	s.t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc, closeAll, err := Start(context.Background(), s.cfg, log)
	if err != nil {
		s.t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(svc.Handler())
	configureServer(srv.Config) // the production server's timeouts and limits
	srv.Start()
	p := &testPod{svc: svc, srv: srv}
	s.t.Cleanup(func() { svc.endStreams(); p.srv.Close(); closeAll() })
	s.pods = append(s.pods, p)
	return p
}

// answer is what a buyer saw.
type answer struct {
	status  int
	code    string // problem code, empty on success
	order   Order
	header  http.Header
	latency time.Duration
}

func (s *testSale) post(pod int, path, body string, header map[string]string) answer {
	req, err := http.NewRequest(http.MethodPost, s.pods[pod].srv.URL+path, bytes.NewBufferString(body))
	if err != nil {
		s.t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return s.do(req)
}

func (s *testSale) do(req *http.Request) answer {
	start := time.Now()
	resp, err := s.client.Do(req)
	if err != nil {
		return answer{status: -1, code: err.Error(), latency: time.Since(start)}
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, header: resp.Header, latency: time.Since(start)}
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusOK {
		_ = json.Unmarshal(raw, &a.order)
		return a
	}
	var p Problem
	if err := json.Unmarshal(raw, &p); err != nil || resp.Header.Get("Content-Type") != "application/problem+json" {
		a.code = "not-a-problem: " + string(raw)
	} else {
		a.code = p.Code
	}
	return a
}

// buy is POST /v1/tickets/{id}/purchase on pod 0.
func (s *testSale) buy(ticket int64, buyer string) answer {
	return s.buyOn(0, ticket, buyer, "")
}

func (s *testSale) buyOn(pod int, ticket int64, buyer, key string) answer {
	h := map[string]string{"Content-Type": "application/json"}
	if key != "" {
		h[idemKeyHeader] = key
	}
	return s.post(pod, fmt.Sprintf("/v1/tickets/%d/purchase", ticket), fmt.Sprintf(`{"buyerId":%q}`, buyer), h)
}

func (s *testSale) getJSON(path string, v any) int {
	resp, err := s.client.Get(s.pods[0].srv.URL + path)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil {
		_ = json.NewDecoder(resp.Body).Decode(v)
	}
	return resp.StatusCode
}

// audit is the truth in Postgres.
type audit struct {
	orders, distinctTickets, sold int64
	byOrderID                     map[string]int64
}

func (s *testSale) audit() audit {
	s.t.Helper()
	ctx := context.Background()
	a := audit{byOrderID: map[string]int64{}}
	if err := s.db.QueryRow(ctx, `SELECT count(*), count(DISTINCT ticket_id), (SELECT count(*) FROM tickets WHERE sold) FROM orders`).
		Scan(&a.orders, &a.distinctTickets, &a.sold); err != nil {
		s.t.Fatal(err)
	}
	rows, err := s.db.Query(ctx, `SELECT id::text, ticket_id FROM orders`)
	if err != nil {
		s.t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var ticket int64
		if err := rows.Scan(&id, &ticket); err != nil {
			s.t.Fatal(err)
		}
		a.byOrderID[id] = ticket
	}
	return a
}

// checkAgainst fails the test unless every 201 has its order in Postgres,
// no seat has two orders, and the counters agree. exact also requires every
// order to have been answered 201 (false where an outage may leave a
// committed order whose answer was a 503).
func (a audit) checkAgainst(t testing.TB, created []Order, exact bool) {
	t.Helper()
	if a.orders != a.distinctTickets {
		t.Fatalf("double sale: %d orders for %d distinct tickets", a.orders, a.distinctTickets)
	}
	if a.sold != a.orders {
		t.Fatalf("%d tickets marked sold but %d orders", a.sold, a.orders)
	}
	seen := map[int64]string{}
	for _, o := range created {
		if prev, dup := seen[o.TicketID]; dup && prev != o.ID.String() {
			t.Fatalf("ticket %d answered 201 to two orders: %s and %s", o.TicketID, prev, o.ID)
		}
		seen[o.TicketID] = o.ID.String()
		if tk, ok := a.byOrderID[o.ID.String()]; !ok || tk != o.TicketID {
			t.Fatalf("201 for order %s (ticket %d) has no matching order row (found ticket %d, %v)", o.ID, o.TicketID, tk, ok)
		}
	}
	if exact && int64(len(seen)) != a.orders {
		t.Fatalf("%d distinct orders answered 201, but Postgres has %d orders", len(seen), a.orders)
	}
}

// newRedisClient is an admin client, for the tests' own chaos (FLUSHALL).
func newRedisClient() *redis.Client {
	rdb, err := NewRedis(Config{RedisURL: redisSrv.AdminURL()})
	if err != nil {
		panic(err)
	}
	return rdb
}
