package delivery

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase/orderstore"
)

var pg *testservers.Postgres

func TestMain(m *testing.M) { os.Exit(testservers.Main(m, nil, &pg)) }

var dbSeq atomic.Int64

// migrated makes a fresh sale database of tickets seats and answers its
// URL (the store that migrated it stays open until the test ends).
func migrated(t *testing.T, tickets int64) string {
	t.Helper()
	ctx := context.Background()
	url, err := pg.CreateDatabase(ctx, fmt.Sprintf("delivery_%d", dbSeq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	s, err := orderstore.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Seed(ctx, tickets); err != nil {
		t.Fatal(err)
	}
	return url
}

// webhooksFile writes a file of webhooks to url: name → the events it
// wants.
func webhooksFile(t *testing.T, url string, hooks map[string][]salesv1alpha1.WebhookEvent) string {
	t.Helper()
	var f salesv1alpha1.WebhooksFile
	for name, events := range hooks {
		f.Webhooks = append(f.Webhooks, salesv1alpha1.ResolvedWebhook{Name: name, URL: url, InsecureHTTP: true,
			SigningSecrets: []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, Events: events})
	}
	raw, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "webhooks.json")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// statements counts the statements a pool sends (each query, each
// statement of a batch), by their SQL's first words.
type statements struct {
	mu  sync.Mutex
	n   int
	by  map[string]int
	off bool
}

func (s *statements) count(sql string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.off {
		return
	}
	s.n++
	f := strings.Fields(sql)
	s.by[strings.Join(f[:min(3, len(f))], " ")]++
}

func (s *statements) reset() (int, map[string]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, by := s.n, s.by
	s.n, s.by = 0, map[string]int{}
	return n, by
}

func (s *statements) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	s.count(d.SQL)
	return ctx
}
func (s *statements) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (s *statements) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}
func (s *statements) TraceBatchQuery(_ context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	s.count(d.SQL)
}
func (s *statements) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// newDeliverer makes a deliverer of the database at url with the webhooks
// of file, on a pool of its own whose statements tr counts (nil: none).
func newDeliverer(t *testing.T, url, file string, tr *statements) (*Deliverer, *pgxpool.Pool) {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	if tr != nil {
		cfg.ConnConfig.Tracer = tr
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	// FollowInterval: the file is read once (no switch statements every
	// 5 s in the measurement).
	d, err := New(Config{File: file, Sale: "test", FollowInterval: time.Hour}, pool, "", prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return d, pool
}

// An idle pod (a webhook, the switch on, no event) polls with one loop and
// one short statement per PollInterval: about 10 statements a second
// beside River's own, where each of the four loops used to run its claim's
// transaction (six round trips) every PollInterval, 240 a second.
func TestFanOut_IdlePod_FewStatements(t *testing.T) {
	url := migrated(t, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(srv.Close)
	file := webhooksFile(t, srv.URL, map[string][]salesv1alpha1.WebhookEvent{"orders": {salesv1alpha1.EventOrderConfirmed}})
	tr := &statements{by: map[string]int{}}
	d, pool := newDeliverer(t, url, file, tr)
	runDeliverer(t, d)
	testservers.Eventually(t, 10*time.Second, 10*time.Millisecond, "the switch on", testservers.Holds(d.OutboxOn))
	waitIdle(t, d)
	tr.reset()
	time.Sleep(2 * time.Second)
	n, by := tr.reset()
	var fanOut int
	for sql, k := range by {
		if !strings.HasPrefix(sql, "-- name:") { // River's queries are named
			fanOut += k
		}
	}
	t.Logf("statements in 2 s idle: %d in all, by their first words: %v", n, by)
	// One poll per PollInterval (100 ms): about 20, and the counts (every
	// 5 s) at most once; the four loops' claims made 480.
	if fanOut > 60 {
		t.Fatalf("an idle pod sent %d statements that are not River's in 2 s (want ≤ 60): %v", fanOut, by)
	}

	// Not asleep: an order committed now is delivered at once.
	if _, err := pool.Exec(context.Background(), `WITH s AS (UPDATE tickets SET sold = true WHERE id = 1 RETURNING id)
		INSERT INTO orders (id, ticket_id, buyer_id) SELECT gen_random_uuid(), id, 'b1' FROM s`); err != nil {
		t.Fatal(err)
	}
	testservers.Eventually(t, 2*time.Second, 10*time.Millisecond, "the order delivered", func() error {
		var n int64
		err := pool.QueryRow(context.Background(), `SELECT coalesce(sum(delivered), 0) FROM webhook_delivered`).Scan(&n)
		if err == nil && n != 1 {
			err = fmt.Errorf("%d delivered", n)
		}
		return err
	})
}

// Counts on a 30,000-order sale with a backlog: eight open claims of 500
// events (one of them a sale event) and 16,001 events after the cursor.
// Each webhook's pending is exactly the events of its types, claimed or
// not; the oldest pending is over the claims too; and each claim's range
// is counted on the (xid, id) index, not by reading the table.
func TestCounts_ClaimedEventsByType_OnTheIndex(t *testing.T) {
	ctx := context.Background()
	url := migrated(t, 30000)
	file := webhooksFile(t, "http://127.0.0.1:1/hooks", map[string][]salesv1alpha1.WebhookEvent{
		"orders": {salesv1alpha1.EventOrderConfirmed},
		"sales":  {salesv1alpha1.EventSaleOnSale, salesv1alpha1.EventSaleSoldOut},
	})
	d, db := newDeliverer(t, url, file, nil)
	// 1,500 transactions of 20 orders; the 601st also records sale.on_sale.
	if _, err := db.Exec(ctx, `UPDATE outbox_switch SET enabled = true, webhook_seen_at = now()`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, `DO $$ BEGIN FOR i IN 0..1499 LOOP
			UPDATE tickets SET sold = true WHERE id BETWEEN i*20+1 AND i*20+20;
			INSERT INTO orders (id, ticket_id, buyer_id) SELECT gen_random_uuid(), g, 'b'||g FROM generate_series(i*20+1, i*20+20) g;
			IF i = 600 THEN
				INSERT INTO webhook_sale_events (type, at, data) VALUES ('sale.on_sale', clock_timestamp(), '{}');
			END IF;
			COMMIT;
		END LOOP; END $$`); err != nil {
		t.Fatal(err)
	}
	// Claims over the events 10,001..14,000 (in the cursor's order), the
	// cursor after them; a retry of an older event in River.
	if _, err := db.Exec(ctx, `WITH e AS (SELECT xid, src, key, at, row_number() OVER (ORDER BY xid, src, key COLLATE "C") AS n FROM webhook_events),
			b AS (SELECT (n-1)/500 AS k, min(n) lo, max(n) hi FROM e GROUP BY 1)
		INSERT INTO webhook_claims (from_xid, from_src, from_key, to_xid, to_src, to_key, first_seq, n, leased_by, leased_until)
		SELECT f.xid, f.src, f.key, l.xid, l.src, l.key, b.lo, 500, 'stopped', now() + interval '1 hour'
		FROM b JOIN e f ON f.n = b.lo - 1 JOIN e l ON l.n = b.hi WHERE b.k BETWEEN 20 AND 27`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, `UPDATE webhook_cursor SET (xid, src, key) = (SELECT to_xid, to_src, to_key FROM webhook_claims ORDER BY id DESC LIMIT 1)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, `INSERT INTO river_job (args, kind, queue, max_attempts, state, scheduled_at)
		VALUES ('{"webhook": "orders", "id": "x", "type": "order.confirmed", "at": "2026-01-02T03:04:05Z"}', $1, $2, 36, 'retryable', now() + interval '1 hour')`,
		KindDelivery, Queue); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, `ANALYZE`); err != nil {
		t.Fatal(err)
	}
	var saleAt time.Time
	if err := db.QueryRow(ctx, `SELECT at FROM webhook_events WHERE type = 'sale.on_sale'`).Scan(&saleAt); err != nil {
		t.Fatal(err)
	}

	cs, err := d.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// orders: 3,999 claimed (the claims' 4,000 events less the sale's),
	// 16,001 after the cursor, the retry.
	if len(cs) != 2 || cs[0].Name != "orders" || cs[0].Pending != 20001 || cs[1].Name != "sales" || cs[1].Pending != 1 {
		t.Fatalf("want orders 20,001 pending and sales 1, got %+v", cs)
	}
	if want := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC); !cs[0].OldestPending.Equal(want) {
		t.Errorf("orders' oldest pending: %s, want the retry's event %s", cs[0].OldestPending, want)
	}
	if !cs[1].OldestPending.Equal(saleAt) {
		t.Errorf("sales' oldest pending: %s, want the claimed sale.on_sale's %s", cs[1].OldestPending, saleAt)
	}

	// Each claim's count reads the index, a few hundred rows.
	rows, err := db.Query(ctx, `SELECT from_xid::text, from_src, from_key, to_xid::text, to_src, to_key, after::text FROM webhook_claims`)
	if err != nil {
		t.Fatal(err)
	}
	var claims [][2]cursor
	for rows.Next() {
		var k [2]cursor
		if err := rows.Scan(&k[0].xid, &k[0].src, &k[0].key, &k[1].xid, &k[1].src, &k[1].key, &k[0].after); err != nil {
			t.Fatal(err)
		}
		claims = append(claims, k)
	}
	if rows.Close(); rows.Err() != nil || len(claims) != 8 {
		t.Fatalf("%d claims (%v)", len(claims), rows.Err())
	}
	for _, k := range claims {
		q, args := countSQL(k[0], &k[1])
		plan := explain(t, db, q, args...)
		if !strings.Contains(plan, "orders_event_xid") || strings.Contains(plan, "Seq Scan on orders") {
			t.Fatalf("a claim's count must read orders on its (xid, id) index:\n%s", plan)
		}
	}
	q, args := countSQL(claims[0][0], &claims[0][1])
	t.Logf("a claim's count:\n%s", explain(t, db, q, args...))

	// What it costs (busy machine: a figure to compare, not to quote):
	// with this backlog, then with the claims only.
	timeCounts(t, d, "8 claims of 500 events and 16,001 events after the cursor")
	if _, err := db.Exec(ctx, `UPDATE webhook_cursor SET (xid, src, key) = (SELECT xid, src, key FROM webhook_events ORDER BY xid DESC, src DESC, key COLLATE "C" DESC LIMIT 1)`); err != nil {
		t.Fatal(err)
	}
	if cs, err := d.Counts(ctx); err != nil || cs[0].Pending != 4000 {
		t.Fatalf("with the cursor at the end: %+v, %v", cs, err)
	}
	timeCounts(t, d, "8 claims of 500 events, none after the cursor")
}

// timeCounts logs how long Counts takes, median of 21.
func timeCounts(t *testing.T, d *Deliverer, what string) {
	t.Helper()
	took := make([]time.Duration, 21)
	for i := range took {
		start := time.Now()
		if _, err := d.Counts(context.Background()); err != nil {
			t.Fatal(err)
		}
		took[i] = time.Since(start)
	}
	slices.Sort(took)
	t.Logf("Counts of 30,000 orders, %s: median %s (min %s, max %s)", what, took[10], took[0], took[20])
}

// explain is EXPLAIN (ANALYZE) of q.
func explain(t *testing.T, db *pgxpool.Pool, q string, args ...any) string {
	t.Helper()
	rows, err := db.Query(context.Background(), `EXPLAIN (ANALYZE, COSTS OFF) `+q, args...)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n")
}

// A claim inside one large transaction (a conversion of the previous
// version's events gives them all one xid): its count reads its own
// events on the index, not every event of that transaction.
func TestCounts_ClaimInsideALargeTransaction_ReadsItsOwnEvents(t *testing.T) {
	ctx := context.Background()
	url := migrated(t, 5000)
	file := webhooksFile(t, "http://127.0.0.1:1/hooks", map[string][]salesv1alpha1.WebhookEvent{"orders": {salesv1alpha1.EventOrderConfirmed}})
	d, db := newDeliverer(t, url, file, nil)
	if _, err := db.Exec(ctx, `UPDATE outbox_switch SET enabled = true, webhook_seen_at = now()`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, `UPDATE tickets SET sold = true;
		INSERT INTO orders (id, ticket_id, buyer_id) SELECT gen_random_uuid(), g, 'b'||g FROM generate_series(1, 5000) g`); err != nil {
		t.Fatal(err)
	}
	// A claim of the events 1,001..1,500 of that one transaction; the
	// cursor after the last event.
	if _, err := db.Exec(ctx, `WITH e AS (SELECT xid, src, key, row_number() OVER (ORDER BY xid, src, key COLLATE "C") AS n FROM webhook_events)
		INSERT INTO webhook_claims (from_xid, from_src, from_key, to_xid, to_src, to_key, first_seq, n, leased_by, leased_until)
		SELECT f.xid, f.src, f.key, l.xid, l.src, l.key, 1001, 500, 'stopped', now() + interval '1 hour'
		FROM e f, e l WHERE f.n = 1000 AND l.n = 1500;
		UPDATE webhook_cursor SET (xid, src, key) = (SELECT xid, src, key FROM webhook_events ORDER BY xid DESC, src DESC, key COLLATE "C" DESC LIMIT 1);
		ANALYZE`); err != nil {
		t.Fatal(err)
	}
	cs, err := d.Counts(ctx)
	if err != nil || len(cs) != 1 || cs[0].Pending != 500 {
		t.Fatalf("want the claim's 500 events pending, got %+v, %v", cs, err)
	}
	var k [2]cursor
	if err := db.QueryRow(ctx, `SELECT from_xid::text, from_src, from_key, to_xid::text, to_src, to_key, after::text FROM webhook_claims`).
		Scan(&k[0].xid, &k[0].src, &k[0].key, &k[1].xid, &k[1].src, &k[1].key, &k[0].after); err != nil {
		t.Fatal(err)
	}
	q, args := countSQL(k[0], &k[1])
	plan := explain(t, db, q, args...)
	// The scan of orders (an index scan, or a bitmap scan of the index)
	// yields the claim's 500 rows and removes none.
	scan := ""
	for line := range strings.Lines(plan) {
		if strings.Contains(line, "orders_event_xid") {
			scan = line
		}
	}
	if !strings.Contains(scan, "rows=500 ") || strings.Contains(plan, "Seq Scan on orders") || strings.Contains(plan, "Rows Removed by Index Recheck") {
		t.Fatalf("the claim's count must read its 500 events on the index, not the transaction's 5,000:\n%s", plan)
	}
}

// The loop that polled for an idle pod claims an event whose endpoint
// hangs: another loop takes the polling over, so an event committed
// meanwhile is not held behind that batch.
func TestFanOut_PollerInALongBatch_OthersStillDeliver(t *testing.T) {
	url := migrated(t, 10)
	var mu sync.Mutex
	seen := map[string]bool{}
	first := make(chan struct{})
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(HeaderID)
		mu.Lock()
		isFirst := len(seen) == 0
		seen[id] = true
		mu.Unlock()
		if isFirst {
			close(first)
			<-release // the first delivery hangs until the test ends
		}
	}))
	t.Cleanup(srv.Close)
	file := webhooksFile(t, srv.URL, map[string][]salesv1alpha1.WebhookEvent{"orders": {salesv1alpha1.EventOrderConfirmed}})
	d, pool := newDeliverer(t, url, file, nil)
	runDeliverer(t, d)
	t.Cleanup(func() { close(release) }) // first: the hanging batch ends
	testservers.Eventually(t, 10*time.Second, 10*time.Millisecond, "the switch on", testservers.Holds(d.OutboxOn))
	waitIdle(t, d)
	order := func(seat int) string {
		t.Helper()
		var id string
		if err := pool.QueryRow(context.Background(), `WITH s AS (UPDATE tickets SET sold = true WHERE id = $1 RETURNING id)
			INSERT INTO orders (id, ticket_id, buyer_id) SELECT gen_random_uuid(), id, 'b' FROM s RETURNING id::text`, seat).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	order(1)
	select {
	case <-first:
	case <-time.After(5 * time.Second):
		t.Fatal("the first order was not delivered")
	}
	second := order(2)
	testservers.Eventually(t, 2*time.Second, 10*time.Millisecond, "the second order delivered while the first batch hangs", testservers.Holds(func() bool {
		mu.Lock()
		defer mu.Unlock()
		return seen[second]
	}))
}

// runDeliverer runs d until the test ends.
func runDeliverer(t *testing.T, d *Deliverer) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

// waitIdle waits until d's fan-out is idle: its loops' polls found
// nothing, and one of them polls for the others.
func waitIdle(t *testing.T, d *Deliverer) {
	t.Helper()
	testservers.Eventually(t, 10*time.Second, 10*time.Millisecond, "the fan-out idle, one loop polling", testservers.Holds(d.idle.poller.Load))
}
