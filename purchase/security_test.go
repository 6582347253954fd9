package purchase_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/orderstore"
	"github.com/flux-order/flux-order/purchase/purchasetest"
	"github.com/flux-order/flux-order/purchase/seatlock"
)

// Issue 8: a 503 tells the buyer a fixed sentence per cause; the driver's
// error (addresses, ports, users, databases) stays in the log.
func TestAPI_503Bodies_HoldNoAddressPortOrDriverText(t *testing.T) {
	s := newTestSale(t, 10)
	port, err := testservers.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	// A pod whose Redis is gone (pod 1), and one whose database pool is
	// closed (pod 0, assembled here so the test holds its store).
	deadRedis := s.Cfg
	deadRedis.RedisURL = fmt.Sprintf("redis://nobody:secret@127.0.0.1:%d/0", port)
	s.Cfg = deadRedis
	s.AddPod()
	store, err := orderstore.Open(t.Context(), s.Sale.Cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb, err := purchase.NewRedis(s.Pods[0].Svc.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	cfg := s.Pods[0].Svc.Config()
	dead := purchase.NewService(cfg, seatlock.New(rdb, cfg.Sale, cfg.LockTTL), store, purchasetest.Discard())
	deadDB := httptest.NewServer(dead.Handler())
	defer deadDB.Close()
	store.Close()
	s.Pods[0] = &purchasetest.Pod{Svc: dead, URL: deadDB.URL}

	for _, c := range []struct {
		pod    int
		path   string
		detail string
	}{
		{1, "/v1/tickets/2/purchase", "the seat store is unavailable"},
		{1, "/v1/purchase", "the seat store is unavailable"},
		{0, "/v1/tickets/3/purchase", "the order database is unavailable"},
		{0, "/v1/availability", "the order database is unavailable"},
	} {
		method := http.MethodPost
		if c.path == "/v1/availability" {
			method = http.MethodGet
		}
		req, _ := http.NewRequest(method, s.Pods[c.pod].URL+c.path, strings.NewReader(`{"buyerId":"x"}`))
		resp, err := s.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), `"detail":"`+c.detail+`"`) {
			t.Fatalf("%s on pod %d: want 503 %q, got %d %s", c.path, c.pod, c.detail, resp.StatusCode, body)
		}
		for _, leak := range []string{"127.0.0.1", strconv.Itoa(port), strconv.Itoa(purchasetest.Postgres().Port), "dial", "redis:", "pool", "postgres", "nobody", s.Cfg.Sale} {
			if strings.Contains(string(body), leak) {
				t.Fatalf("%s: the 503 body leaks %q: %s", c.path, leak, body)
			}
		}
	}
}

// Issue 8: order ids derived from an Idempotency-Key are keyed with the
// sale's secret: the old public derivation (UUIDv5 of sale, buyer, key)
// does not give them, and another secret gives another id.
func TestPurchase_KeyedOrderIDs_NeedTheSaleSecret(t *testing.T) {
	s := newTestSale(t, 10)
	a := s.BuyOn(0, 1, "alice", "k1")
	if a.Status != http.StatusCreated {
		t.Fatalf("purchase: %d %s", a.Status, a.Code)
	}
	ns := uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://fluxorder.io/sales/"+s.Cfg.Sale))
	if public := uuid.NewSHA1(ns, []byte("alice\x00k1")); a.Order.ID == public {
		t.Fatal("the order id is computable from public inputs")
	}
	if a.Order.ID.Version() != 8 {
		t.Fatalf("a derived id is a UUIDv8, got version %d", a.Order.ID.Version())
	}
	if other := newTestSale(t, 10).BuyOn(0, 1, "alice", "k1"); other.Status != http.StatusCreated || other.Order.ID == a.Order.ID {
		t.Fatalf("another sale (another secret) derived the same order id: %d %s %s", other.Status, other.Code, other.Order.ID)
	}
	if again := s.BuyOn(0, 1, "alice", "k1"); again.Order.ID != a.Order.ID {
		t.Fatalf("the derivation must be stable for retries: %s then %s", a.Order.ID, again.Order.ID)
	}
}

// Issue 8: the purchase pods' Redis user (redisacl) can run the service,
// both Lua scripts included, and nothing that could change a sale's outcome
// behind its back.
func TestRedisACL_PurchaseUserBuysButCannotFlushOrReconfigure(t *testing.T) {
	s := newTestSale(t, 20)
	if a := s.Buy(1, "acl-single"); a.Status != http.StatusCreated {
		t.Fatalf("single-seat purchase through the ACL user: %d %s", a.Status, a.Code)
	}
	if a := s.Post(0, "/v1/purchase", `{"buyerId":"acl-any"}`, nil); a.Status != http.StatusCreated {
		t.Fatalf("any-seat purchase through the ACL user: %d %s", a.Status, a.Code)
	}
	opt, err := redis.ParseURL(s.Cfg.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	ctx := context.Background()
	refused := map[string]error{
		"FLUSHALL":             rdb.FlushAll(ctx).Err(),
		"FLUSHDB":              rdb.FlushDB(ctx).Err(),
		"CONFIG SET":           rdb.ConfigSet(ctx, "maxmemory-policy", "allkeys-lru").Err(),
		"KEYS":                 rdb.Keys(ctx, "*").Err(),
		"SCRIPT FLUSH":         rdb.ScriptFlush(ctx).Err(),
		"SET another sale key": rdb.Set(ctx, "fs:other-sale:ticket:2", "sold:x", 0).Err(),
	}
	for cmd, err := range refused {
		if err == nil || !strings.Contains(err.Error(), "NOPERM") {
			t.Errorf("%s as the purchase user: want NOPERM, got %v", cmd, err)
		}
	}
}

// Issue 8: the pods reach Postgres as a role that is not a superuser, over
// TLS, verifying the server's certificate and name (sslmode=verify-full)
// against the sale's CA; purchases work, and plain connections are refused.
func TestPostgresTLS_ServiceConnectsWithVerifyFullAndSells(t *testing.T) {
	pg, err := testservers.StartPostgresTLS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Close() })
	ctx := context.Background()
	appURL, err := pg.AppDatabase(ctx, "tls_sale")
	if err != nil {
		t.Fatal(err)
	}
	s := newTestSale(t, 20, func(c *purchase.Config) { c.DatabaseURL = appURL })
	if a := s.Buy(1, "tls-single"); a.Status != http.StatusCreated {
		t.Fatalf("single-seat purchase over TLS: %d %s", a.Status, a.Code)
	}
	if a := s.Post(0, "/v1/purchase", `{"buyerId":"tls-any"}`, nil); a.Status != http.StatusCreated {
		t.Fatalf("any-seat purchase over TLS: %d %s", a.Status, a.Code)
	}
	var ssl, super bool
	if err := s.DB.QueryRow(ctx, `SELECT s.ssl, r.rolsuper FROM pg_stat_ssl s, pg_roles r
		WHERE s.pid = pg_backend_pid() AND r.rolname = current_user`).Scan(&ssl, &super); err != nil {
		t.Fatal(err)
	}
	if !ssl || super {
		t.Fatalf("the app connection: want TLS and no superuser, got ssl=%v superuser=%v", ssl, super)
	}
	admin, err := pgx.Connect(ctx, pg.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var conns int
	var allTLS bool
	if err := admin.QueryRow(ctx, `SELECT count(*), coalesce(bool_and(s.ssl), false) FROM pg_stat_ssl s
		JOIN pg_stat_activity a USING (pid) WHERE a.usename = $1`, testservers.AppRole).Scan(&conns, &allTLS); err != nil {
		t.Fatal(err)
	}
	if conns == 0 || !allTLS {
		t.Fatalf("every connection of the app role (the service's pool) must use TLS: %d connections, all TLS %v", conns, allTLS)
	}
	plain := strings.Replace(appURL, "sslmode=verify-full", "sslmode=disable", 1)
	if c, err := pgx.Connect(ctx, plain); err == nil {
		c.Close(ctx)
		t.Fatal("the app role logged in without TLS")
	}
	if a := s.Audit(); a.Orders != 2 {
		t.Fatalf("want 2 orders, got %d", a.Orders)
	}
}

// Issue 8: with spec.redis.tls the pods reach Redis over TLS only
// (rediss://), verifying its certificate against the sale's CA; both Lua
// scripts and the plain commands work through it, and a client that does
// not trust the CA is refused.
func TestRedisTLS_ServiceVerifiesTheServerAndSells(t *testing.T) {
	r, err := testservers.StartRedisTLS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	s := newTestSale(t, 20, func(c *purchase.Config) { c.RedisURL, c.RedisCAFile = r.URL(), r.CAFile })
	if a := s.Buy(1, "tls-single"); a.Status != http.StatusCreated {
		t.Fatalf("single-seat purchase over Redis TLS: %d %s", a.Status, a.Code)
	}
	if a := s.Buy(1, "tls-late"); a.Status != http.StatusConflict || a.Code != "ticket_sold" {
		t.Fatalf("the sold seat over Redis TLS: %d %s", a.Status, a.Code)
	}
	if a := s.Post(0, "/v1/purchase", `{"buyerId":"tls-any"}`, nil); a.Status != http.StatusCreated {
		t.Fatalf("any-seat purchase over Redis TLS: %d %s", a.Status, a.Code)
	}
	if a := s.Audit(); a.Orders != 2 {
		t.Fatalf("want 2 orders, got %d", a.Orders)
	}
	// Without the CA (system roots only) the server is not trusted.
	untrusting := s.Cfg
	untrusting.RedisCAFile = ""
	rdb, err := purchase.NewRedis(untrusting)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if err := rdb.Ping(context.Background()).Err(); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a client without the sale's CA: want a certificate error, got %v", err)
	}
}
