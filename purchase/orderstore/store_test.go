package orderstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flux-order/flux-order/internal/testservers"
)

var pg *testservers.Postgres

func TestMain(m *testing.M) { os.Exit(testservers.Main(m, nil, &pg)) }

var dbSeq atomic.Int64

func newStore(t testing.TB) *Store {
	t.Helper()
	s, _ := newStoreAt(t)
	return s
}

// newStoreAt is newStore with its database's URL.
func newStoreAt(t testing.TB) (*Store, string) {
	t.Helper()
	ctx := context.Background()
	url, err := pg.CreateDatabase(ctx, fmt.Sprintf("store_%d", dbSeq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return s, url
}

func TestSeed_ConcurrentPodsSeedEachSeatOnce(t *testing.T) {
	s := newStore(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() { errs <- s.Seed(context.Background(), 5000) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var rows int64
	if err := s.pool.QueryRow(context.Background(), `SELECT count(*) FROM tickets`).Scan(&rows); err != nil || rows != 5000 {
		t.Fatalf("want 5000 seats, got %d (%v)", rows, err)
	}
	if err := s.Seed(context.Background(), 4999); !errors.Is(err, ErrShrink) {
		t.Fatalf("shrinking: want ErrShrink, got %v", err)
	}
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatalf("migrating twice must be a no-op: %v", err)
	}
}

func TestConfirm_Outcomes(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if err := s.Seed(ctx, 10); err != nil {
		t.Fatal(err)
	}
	first := uuid.New()
	o, replayed, err := s.Confirm(ctx, Purchase{TicketID: 1, OrderID: first, BuyerID: "a", IdempotencyKey: "k", MaxPerBuyer: 2})
	if err != nil || replayed || o.ID != first || o.TicketID != 1 {
		t.Fatalf("first sale: %+v %v %v", o, replayed, err)
	}
	var sold *SoldError
	if _, _, err := s.Confirm(ctx, Purchase{TicketID: 1, OrderID: uuid.New(), BuyerID: "b"}); !errors.As(err, &sold) || sold.OrderID != first {
		t.Fatalf("second sale of seat 1: want SoldError naming %s, got %v", first, err)
	}
	if o, replayed, err := s.Confirm(ctx, Purchase{TicketID: 1, OrderID: first, BuyerID: "a", IdempotencyKey: "k", MaxPerBuyer: 2}); err != nil || !replayed || o.ID != first {
		t.Fatalf("replay: %+v %v %v", o, replayed, err)
	}
	if _, _, err := s.Confirm(ctx, Purchase{TicketID: 2, OrderID: uuid.New(), BuyerID: "a", IdempotencyKey: "k"}); !errors.Is(err, ErrKeyReused) {
		t.Fatalf("key reused for another seat: want ErrKeyReused, got %v", err)
	}
	if _, _, err := s.Confirm(ctx, Purchase{TicketID: 3, OrderID: uuid.New(), BuyerID: "a", MaxPerBuyer: 2}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Confirm(ctx, Purchase{TicketID: 4, OrderID: uuid.New(), BuyerID: "a", MaxPerBuyer: 2}); !errors.Is(err, ErrBuyerLimit) {
		t.Fatalf("third ticket with a limit of 2: want ErrBuyerLimit, got %v", err)
	}
	if sold, err := s.TicketSold(ctx, 4); err != nil || sold {
		t.Fatalf("a refused purchase must leave the seat unsold: %v %v", sold, err)
	}
	n, err := s.Counts(ctx)
	if err != nil || n != (Counts{Tickets: 10, Sold: 2}) {
		t.Fatalf("counts %+v %v, want 2 sold of 10", n, err)
	}
	ids, err := s.UnsoldFrom(ctx, 9, 4)
	if err != nil || fmt.Sprint(ids) != "[9 10 2 4]" {
		t.Fatalf("unsold from 9, wrapping: %v %v", ids, err)
	}
}

// BenchmarkSeed measures seeding at three inventory sizes:
// go test ./purchase/orderstore/ -run '^$' -bench Seed -benchtime 1x
func BenchmarkSeed(b *testing.B) {
	for _, n := range []int64{1_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				s := newStore(b)
				b.StartTimer()
				if err := s.Seed(context.Background(), n); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// A group-commit statement that runs out of time is cancelled on the
// server right after its deadline, not only cut on our side: the settle
// time relies on it. pgx closes a connection whose read its context cut
// (pgconn's asyncClose) by sending PostgreSQL a CancelRequest first, which
// ends a statement waiting on a row lock and, which one server cannot
// show, a commit waiting for a synchronous standby's ack (the client check
// never ends that wait). Without the cancel a session waiting on a lock
// would go on until the server's next client check and commit after its
// buyer was told the outcome is unknown.
func TestConfirm_OutOfTime_CancelledOnTheServerAtItsDeadline(t *testing.T) {
	ctx := context.Background()
	s := seeded(t, 5)
	tx := lockSeatRow(t, s, 1)
	running := func() error {
		var n int
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND state = 'active' AND query LIKE '%confirm_purchase(%'
				AND pid <> pg_backend_pid()`).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%d running", n)
		}
		return nil
	}
	// The server checks the client every second from the statement's
	// start: with 1.2 s its next check is 0.8 s after the deadline.
	short, cancel := context.WithTimeout(ctx, 1200*time.Millisecond)
	defer cancel()
	_, _, err := s.Confirm(short, Purchase{TicketID: 1, OrderID: uuid.New(), BuyerID: "late"})
	deadline, _ := short.Deadline()
	var refused *SoldError
	if err == nil || errors.As(err, &refused) {
		t.Fatalf("a purchase blocked past its deadline: %v, want an unknown outcome", err)
	}
	testservers.Eventually(t, ClientCheckInterval/2, 5*time.Millisecond, "the statement to end on the server", running)
	if late := time.Since(deadline); late >= ClientCheckInterval*3/4 {
		t.Fatalf("the statement ended %s after its deadline: by the client check, not a cancel", late)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if sold, _, err := s.TicketState(ctx, 1); err != nil || sold {
		t.Fatalf("seat 1 sold %v (%v) after its purchase's deadline", sold, err)
	}
	if _, _, err := s.Confirm(ctx, Purchase{TicketID: 1, OrderID: uuid.New(), BuyerID: "next"}); err != nil {
		t.Fatalf("the next purchase of the seat: %v", err)
	}
}

// The database URL is a Secret's value (spec.postgres.external may name
// any key of the namespace): a URL that does not parse is refused without
// any of its text, which would reach the pod's log.
func TestOpen_BadURLNotRepeated(t *testing.T) {
	for _, url := range []string{
		"postgres://fluxorder:pw@db.example:s3cr3t/sale",
		"-----BEGIN PRIVATE KEY-----\ns3cr3t\n-----END PRIVATE KEY-----\n",
		"host=db port=s3cr3t",
	} {
		_, err := Open(context.Background(), url)
		if err == nil {
			t.Fatalf("%q opened", url)
		}
		if strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "BEGIN") {
			t.Errorf("the error repeats the URL: %v", err)
		}
	}
}
