package orderstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestConfirmPurchases_OneBatch_EachRefusalIsItsOwn sends one statement
// whose members hit every refusal (sold, held, limit, a replayed key) among
// members that must commit: each gets the answer it would get alone, and
// the others commit.
func TestConfirmPurchases_OneBatch_EachRefusalIsItsOwn(t *testing.T) {
	ctx := context.Background()
	s := seeded(t, 20)
	buy := func(seat int64, buyer, key string) Order {
		t.Helper()
		o, _, err := s.Confirm(ctx, Purchase{TicketID: seat, OrderID: uuid.New(), BuyerID: buyer, IdempotencyKey: key})
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	owner := buy(1, "x", "")
	hold, _, err := s.PlaceHold(ctx, HoldRequest{TicketID: 2, HoldID: uuid.New(), BuyerID: "y", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	buy(3, "lim", "")
	buy(4, "lim", "")
	replay := buy(5, "r", "k1")

	members := []Purchase{
		{TicketID: 6, BuyerID: "a"},
		{TicketID: 1, BuyerID: "b"},
		{TicketID: 7, BuyerID: "c"},
		{TicketID: 2, BuyerID: "d"},
		{TicketID: 8, BuyerID: "lim"},
		{TicketID: 5, BuyerID: "r", IdempotencyKey: "k1"},
		{TicketID: 9, BuyerID: "e", IdempotencyKey: "k2"},
		{TicketID: 10, BuyerID: "two"},
		{TicketID: 11, BuyerID: "two"},
		{TicketID: 12, BuyerID: "two"},
	}
	for i := range members {
		members[i].OrderID = uuid.New()
		members[i].MaxPerBuyer = 2
	}
	res, err := s.confirmPurchases(ctx, members)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ outcome, detail string }{
		{"ok", ""}, {"sold", owner.ID.String()}, {"ok", ""},
		{"held", fmt.Sprintf("%s %d", hold.ID, hold.ExpiresAt.UnixMilli())},
		{"limit", "2"}, {"replayed", ""}, {"ok", ""},
		{"ok", ""}, {"ok", ""}, {"limit", "2"},
	}
	for i, w := range want {
		if res[i].outcome != w.outcome || res[i].detail != w.detail {
			t.Errorf("member %d (seat %d, buyer %s): got %s %q, want %s %q", i, members[i].TicketID, members[i].BuyerID,
				res[i].outcome, res[i].detail, w.outcome, w.detail)
		}
		if w.outcome == "ok" && (res[i].order.ID != members[i].OrderID || res[i].order.TicketID != members[i].TicketID) {
			t.Errorf("member %d: committed %+v, want its own order", i, res[i].order)
		}
	}
	if res[5].order.ID != replay.ID {
		t.Errorf("the replayed key must answer its order %s, got %+v", replay.ID, res[5].order)
	}

	// The database holds exactly the five new orders, counted once each.
	n, err := s.Counts(ctx)
	if err != nil || n.Sold != 4+5 || n.Held != 1 {
		t.Fatalf("counts %+v %v: want 9 sold (4 before, 5 in the batch) and 1 held", n, err)
	}
	var orders, counted int
	if err := s.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM orders), (SELECT sum(tickets) FROM buyers)`).Scan(&orders, &counted); err != nil || orders != 9 || counted != 9 {
		t.Fatalf("orders %d, buyers count %d (%v): want 9 and 9", orders, counted, err)
	}
	var two int
	if err := s.pool.QueryRow(ctx, `SELECT tickets FROM buyers WHERE buyer_id = 'two'`).Scan(&two); err != nil || two != 2 {
		t.Fatalf("buyer two counts %d (%v), want 2: two orders of one batch count as one after the other", two, err)
	}

	// Through Confirm: a key reused for another seat is refused as such.
	if _, _, err := s.Confirm(ctx, Purchase{TicketID: 13, OrderID: uuid.New(), BuyerID: "r", IdempotencyKey: "k1"}); !errors.Is(err, ErrKeyReused) {
		t.Fatalf("a key reused for another seat: want ErrKeyReused, got %v", err)
	}
}

// TestHoldSeatsAndConfirmHolds_OneBatch_EachOutcomeIsItsOwn does the same
// for holds and hold confirmations.
func TestHoldSeatsAndConfirmHolds_OneBatch_EachOutcomeIsItsOwn(t *testing.T) {
	ctx := context.Background()
	s := seeded(t, 20)
	if _, _, err := s.Confirm(ctx, Purchase{TicketID: 1, OrderID: uuid.New(), BuyerID: "x"}); err != nil {
		t.Fatal(err)
	}
	existing, _, err := s.PlaceHold(ctx, HoldRequest{TicketID: 2, HoldID: uuid.New(), BuyerID: "y", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	reqs := []HoldRequest{
		{TicketID: 3, BuyerID: "a"},
		{TicketID: 1, BuyerID: "b"},
		{TicketID: 2, BuyerID: "c"},
		{TicketID: 4, BuyerID: "y", HoldID: existing.ID}, // a retry on another seat
		{TicketID: 5, BuyerID: "two"},
		{TicketID: 6, BuyerID: "two"},
	}
	for i := range reqs {
		if reqs[i].HoldID == uuid.Nil {
			reqs[i].HoldID = uuid.New()
		}
		reqs[i].TTL, reqs[i].MaxPerBuyer = time.Minute, 1
	}
	res, err := s.holdSeats(ctx, reqs)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"ok", "sold", "held", "replayed", "ok", "limit"} {
		if res[i].outcome != want {
			t.Errorf("hold member %d: got %s, want %s", i, res[i].outcome, want)
		}
	}
	if res[3].hold.TicketID != 2 || res[3].hold.ID != existing.ID {
		t.Errorf("the retried hold must answer the hold on seat 2, got %+v", res[3].hold)
	}
	if sold, held, _ := s.TicketState(ctx, 4); sold || held {
		t.Errorf("a replayed hold must leave the seat it tried alone: seat 4 sold=%v held=%v", sold, held)
	}

	// Confirm in one batch: a live hold, another buyer's, a released one,
	// a confirmed one, an unknown one.
	released, _, err := s.PlaceHold(ctx, HoldRequest{TicketID: 7, HoldID: uuid.New(), BuyerID: "r", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.ReleaseHold(ctx, released.ID); err != nil {
		t.Fatal(err)
	}
	confirmed, _, err := s.PlaceHold(ctx, HoldRequest{TicketID: 8, HoldID: uuid.New(), BuyerID: "q", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	first, _, err := s.ConfirmHold(ctx, confirmed.ID, "q", uuid.New(), "p0")
	if err != nil {
		t.Fatal(err)
	}
	cs := []holdConfirm{
		{hold: res[0].hold.ID, buyer: "a", order: uuid.New(), paymentRef: "p1"},
		{hold: existing.ID, buyer: "intruder", order: uuid.New(), paymentRef: "p2"},
		{hold: released.ID, buyer: "r", order: uuid.New(), paymentRef: "p3"},
		{hold: confirmed.ID, buyer: "q", order: uuid.New(), paymentRef: "p4"},
		{hold: uuid.New(), buyer: "z", order: uuid.New(), paymentRef: "p5"},
		{hold: res[4].hold.ID, buyer: "two", order: uuid.New(), paymentRef: "p6"},
	}
	out, err := s.confirmHolds(ctx, cs)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"ok", "nohold", "released", "replayed", "nohold", "ok"} {
		if out[i].outcome != want {
			t.Errorf("confirm member %d: got %s, want %s", i, out[i].outcome, want)
		}
	}
	if o := out[0].order; o.ID != cs[0].order || o.TicketID != 3 || o.HoldID != cs[0].hold || o.PaymentRef != "p1" {
		t.Errorf("the confirmed hold's order: %+v", o)
	}
	if o := out[3].order; o.ID != first.ID || o.PaymentRef != "p0" {
		t.Errorf("a confirmed hold must replay its first order %s, got %+v", first.ID, o)
	}
	if n, err := s.Counts(ctx); err != nil || n.Sold != 4 || n.Held != 1 {
		t.Fatalf("counts %+v %v: want 4 sold (1 bought, 3 confirmed) and seat 2 held", n, err)
	}
}

// TestBatcher_ASharedSeatOrKeyWaitsForTheNextBatch checks the batch a
// flusher takes: members that share a seat or an idempotency key with an
// earlier one wait, in order, and a full batch leaves the rest waiting.
func TestBatcher_ASharedSeatOrKeyWaitsForTheNextBatch(t *testing.T) {
	b := newBatcher[Purchase, memberResult](Batching{Max: 4, Flushers: 1}, nil, purchaseConflicts, nil)
	for _, p := range []Purchase{
		{TicketID: 1, BuyerID: "a"},
		{TicketID: 1, BuyerID: "b"},                      // seat 1 again
		{TicketID: 2, BuyerID: "c", IdempotencyKey: "k"}, //
		{TicketID: 3, BuyerID: "c", IdempotencyKey: "k"}, // key again
		{TicketID: 3, BuyerID: "d", IdempotencyKey: "k"}, // another buyer's key
		{TicketID: 4, BuyerID: "e"},
		{TicketID: 5, BuyerID: "f"}, // beyond Max
	} {
		b.pending = append(b.pending, &call[Purchase, memberResult]{req: p})
	}
	seats := func(cs []*call[Purchase, memberResult]) (s []string) {
		for _, c := range cs {
			s = append(s, fmt.Sprintf("%d%s", c.req.TicketID, c.req.BuyerID))
		}
		return s
	}
	batch, _ := b.take(nil)
	if got := fmt.Sprint(seats(batch)); got != "[1a 2c 3d 4e]" {
		t.Errorf("batch %s, want [1a 2c 3d 4e]", got)
	}
	if got := fmt.Sprint(seats(b.pending)); got != "[1b 3c 5f]" {
		t.Errorf("waiting %s, want [1b 3c 5f]", got)
	}
	// The next batch takes the members that waited, in order.
	batch, _ = b.take(nil)
	if got := fmt.Sprint(seats(batch)); got != "[1b 3c 5f]" || len(b.pending) != 0 {
		t.Errorf("next batch %s (waiting %d), want [1b 3c 5f]", got, len(b.pending))
	}
}

// A lone buyer's confirmation runs in its own goroutine, at once, and the
// flusher slots come back; concurrent ones share statements.
func TestBatcher_ALoneMemberRunsAtOnce_ConcurrentOnesShare(t *testing.T) {
	var mu sync.Mutex
	var sizes []int
	release := make(chan struct{})
	b := newBatcher[int, memberResult](Batching{Max: 64, Flushers: 1}, newBatchMetrics().series("test"),
		func(int) [2]string { return [2]string{} },
		func(_ context.Context, reqs []int) ([]memberResult, error) {
			mu.Lock()
			sizes = append(sizes, len(reqs))
			first := len(sizes) == 1
			mu.Unlock()
			if first {
				<-release // the first statement is slow: the others queue behind it
			}
			return make([]memberResult, len(reqs)), nil
		})
	ctx := context.Background()
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = b.do(ctx, 0) })
	for !func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.busy == 1 && len(b.pending) == 0 }() {
		time.Sleep(time.Millisecond)
	}
	for i := range 10 {
		wg.Go(func() { _, _ = b.do(ctx, i+1) })
	}
	for !func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.pending) == 10 }() {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	b.close()
	if fmt.Sprint(sizes) != "[1 10]" {
		t.Fatalf("statements of %v members, want [1 10]: the ten waiting behind the first share one", sizes)
	}
	if b.busy != 0 {
		t.Fatalf("%d flusher slots still taken after every member was answered", b.busy)
	}
}

// TestGroupCommit_ThreePodsSharedBuyers_NoDeadlockNoDoubleSale races
// three stores (three pods) with large batches over few seats and few
// shared buyers, with and without a buyer limit: every seat is sold at
// most once, the counters match the orders, each buyer stays within the
// limit, and PostgreSQL saw no deadlock.
func TestGroupCommit_ThreePodsSharedBuyers_NoDeadlockNoDoubleSale(t *testing.T) {
	for _, limit := range []int{0, 3} {
		t.Run(fmt.Sprintf("limit=%d", limit), func(t *testing.T) {
			ctx := context.Background()
			url, err := pg.CreateDatabase(ctx, fmt.Sprintf("store_%d", dbSeq.Add(1)))
			if err != nil {
				t.Fatal(err)
			}
			var pods []*Store
			for range 3 {
				s, err := Open(ctx, url, WithBatching(Batching{Max: 64, Window: 2 * time.Millisecond, Flushers: 4}))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(s.Close)
				pods = append(pods, s)
			}
			if err := pods[0].Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			const seats, buyers, attempts = 400, 12, 3000
			if err := pods[0].Seed(ctx, seats); err != nil {
				t.Fatal(err)
			}
			var deadlocksBefore int64
			_ = pods[0].pool.QueryRow(ctx, `SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()`).Scan(&deadlocksBefore)

			var mu sync.Mutex
			won := map[int64]uuid.UUID{}
			perBuyer := map[string]int{}
			var failures []error
			var wg sync.WaitGroup
			sem := make(chan struct{}, 192)
			for i := range attempts {
				sem <- struct{}{}
				wg.Go(func() {
					defer func() { <-sem }()
					s := pods[i%3]
					buyer := fmt.Sprintf("b%d", rand.IntN(buyers))
					p := Purchase{TicketID: 1 + rand.Int64N(seats), OrderID: uuid.New(), BuyerID: buyer, MaxPerBuyer: limit}
					var err error
					if i%4 == 0 { // some holds, some keyed purchases
						_, _, err = s.PlaceHold(ctx, HoldRequest{TicketID: p.TicketID, HoldID: uuid.New(), BuyerID: buyer, TTL: 50 * time.Millisecond, MaxPerBuyer: limit})
					} else {
						if i%3 == 0 {
							p.IdempotencyKey = fmt.Sprintf("key-%d", i%50)
						}
						var o Order
						var replayed bool
						o, replayed, err = s.Confirm(ctx, p)
						if err == nil && !replayed {
							mu.Lock()
							if prev, ok := won[o.TicketID]; ok {
								failures = append(failures, fmt.Errorf("seat %d answered twice: %s and %s", o.TicketID, prev, o.ID))
							}
							won[o.TicketID] = o.ID
							perBuyer[buyer]++
							mu.Unlock()
						}
					}
					var sold *SoldError
					var held *HeldError
					if err != nil && !errors.As(err, &sold) && !errors.As(err, &held) && !errors.Is(err, ErrBuyerLimit) && !errors.Is(err, ErrKeyReused) {
						mu.Lock()
						failures = append(failures, err)
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			for _, err := range failures {
				t.Error(err)
			}
			for b, n := range perBuyer {
				if limit > 0 && n > limit {
					t.Errorf("buyer %s got %d orders, over the limit of %d", b, n, limit)
				}
			}
			var orders, distinct, counted, buyersCounted int64
			var deadlocks int64
			err = pods[0].pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT ticket_id),
				(SELECT sum(sold) FROM sold_counter), (SELECT coalesce(sum(tickets), 0) FROM buyers),
				(SELECT deadlocks FROM pg_stat_database WHERE datname = current_database())
				FROM orders`).Scan(&orders, &distinct, &counted, &buyersCounted, &deadlocks)
			if err != nil {
				t.Fatal(err)
			}
			if orders != int64(len(won)) || distinct != orders || counted != orders || buyersCounted != orders {
				t.Fatalf("orders %d (distinct seats %d), answered %d, sold counter %d, buyers counted %d: all must agree",
					orders, distinct, len(won), counted, buyersCounted)
			}
			if deadlocks != deadlocksBefore {
				t.Fatalf("PostgreSQL detected %d deadlocks", deadlocks-deadlocksBefore)
			}
			t.Logf("%d attempts: %d orders", attempts, orders)
		})
	}
}

// A member whose time is nearly up when its batch leaves is answered at
// once and not sent: it cannot cut the statement short for the others.
func TestBatcher_AMemberOutOfTime_IsNotSentAndDoesNotShortenTheBatch(t *testing.T) {
	ctx := context.Background()
	s := seeded(t, 10)
	late, cancel := context.WithDeadline(ctx, time.Now().Add(minStatementTime/2))
	defer cancel()
	b := s.purchases
	lateCall := &call[Purchase, memberResult]{req: Purchase{TicketID: 1, OrderID: uuid.New(), BuyerID: "late"},
		done: make(chan outcome[memberResult], 1)}
	lateCall.deadline, _ = late.Deadline()
	onTime := &call[Purchase, memberResult]{req: Purchase{TicketID: 2, OrderID: uuid.New(), BuyerID: "on-time"},
		done: make(chan outcome[memberResult], 1), deadline: time.Now().Add(time.Minute)}
	b.send([]*call[Purchase, memberResult]{lateCall, onTime})
	if o := <-lateCall.done; !errors.Is(o.err, context.DeadlineExceeded) {
		t.Fatalf("the late member: want DeadlineExceeded, got %+v", o)
	}
	if o := <-onTime.done; o.err != nil || o.res.outcome != "ok" {
		t.Fatalf("the member on time must commit, got %+v", o)
	}
	if sold, _, _ := s.TicketState(ctx, 1); sold {
		t.Fatal("the late member was sent: seat 1 sold")
	}
}

// TestBatching_CheckoutKindsShareTheFlushers: holds and hold confirmations
// run at once in a checkout, so each kind gets half the flushers (at least
// one) and a checkout sale keeps as many statements in flight as a
// sell-out; purchases keep them all.
func TestBatching_CheckoutKindsShareTheFlushers(t *testing.T) {
	for flushers, want := range map[int]int{1: 1, 2: 1, 3: 2, 4: 2, 64: 32} {
		if got := (Batching{Max: 8, Flushers: flushers}).checkout().Flushers; got != want {
			t.Errorf("%d flushers: each checkout kind gets %d, want %d", flushers, got, want)
		}
	}
	s := newStore(t)
	if p, h, c := s.purchases.cfg.Flushers, s.holds.cfg.Flushers, s.confirms.cfg.Flushers; p != DefaultBatchFlushers ||
		h != DefaultBatchFlushers/2 || c != DefaultBatchFlushers/2 {
		t.Fatalf("flushers: purchases %d, holds %d, confirmations %d; want %d, %d, %d",
			p, h, c, DefaultBatchFlushers, DefaultBatchFlushers/2, DefaultBatchFlushers/2)
	}
}

// A batch whose members carry different buyer limits (the limit changed
// live) runs one transaction per limit. When a later one fails, the
// members of the one that committed get their own outcomes (an order, a
// refusal), not its error: an order answered as an error is a 503 whose
// seat lock is released although the seat is sold.
func TestGroupCommit_APartitionFails_TheCommittedPartitionsMembersGetTheirOutcomes(t *testing.T) {
	ctx := context.Background()
	url, err := pg.CreateDatabase(ctx, fmt.Sprintf("store_%d", dbSeq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, url, WithBatching(Batching{Max: 8, Flushers: 1}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Seed(ctx, 10); err != nil {
		t.Fatal(err)
	}
	sold, _, err := s.Confirm(ctx, Purchase{TicketID: 3, OrderID: uuid.New(), BuyerID: "earlier"})
	if err != nil {
		t.Fatal(err)
	}
	// Two other sessions hold seats 5 and 2: the statement for seat 5
	// keeps the one flusher busy while the three members queue; seat 2's
	// holds the second partition until the batch's deadline.
	lock := func(seat int) pgx.Tx {
		tx, err := s.pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tx.Rollback(ctx) })
		if _, err := tx.Exec(ctx, `SELECT 1 FROM tickets WHERE id = $1 FOR UPDATE`, seat); err != nil {
			t.Fatal(err)
		}
		return tx
	}
	first, second := lock(5), lock(2)
	type answer struct {
		o   Order
		err error
	}
	confirm := func(p Purchase, timeout time.Duration) chan answer {
		ch := make(chan answer, 1)
		go func() {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			o, _, err := s.Confirm(ctx, p)
			ch <- answer{o, err}
		}()
		return ch
	}
	waitFor := func(cond func() bool) {
		for !func() bool { s.purchases.mu.Lock(); defer s.purchases.mu.Unlock(); return cond() }() {
			time.Sleep(time.Millisecond)
		}
	}
	blocker := confirm(Purchase{TicketID: 5, OrderID: uuid.New(), BuyerID: "blocker"}, time.Minute)
	waitFor(func() bool { return s.purchases.busy == 1 && len(s.purchases.pending) == 0 })
	queue := func(p Purchase) chan answer { // in this order
		var n int
		waitFor(func() bool { n = len(s.purchases.pending); return true })
		ch := confirm(p, 2*time.Second)
		waitFor(func() bool { return len(s.purchases.pending) == n+1 })
		return ch
	}
	ok := queue(Purchase{TicketID: 1, OrderID: uuid.New(), BuyerID: "a"})
	refused := queue(Purchase{TicketID: 3, OrderID: uuid.New(), BuyerID: "b"})
	failed := queue(Purchase{TicketID: 2, OrderID: uuid.New(), BuyerID: "c", MaxPerBuyer: 5})
	if err := first.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if a := <-blocker; a.err != nil {
		t.Fatalf("the first statement: %v", a.err)
	}
	// The next batch is [1, 3] under no limit, then [2] under limit 5.
	if a := <-ok; a.err != nil || a.o.TicketID != 1 {
		t.Fatalf("seat 1 committed in the first partition, answered seat %d, %v", a.o.TicketID, a.err)
	}
	var soldErr *SoldError
	if a := <-refused; !errors.As(a.err, &soldErr) || soldErr.OrderID != sold.ID {
		t.Fatalf("seat 3 refused in the first partition, answered %v; want SoldError naming %s", a.err, sold.ID)
	}
	a := <-failed
	if a.err == nil || errors.As(a.err, &soldErr) {
		t.Fatalf("seat 2's partition ran into its deadline, answered seat %d, %v; want an unknown outcome", a.o.TicketID, a.err)
	}
	if err := second.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if isSold, _, err := s.TicketState(ctx, 1); err != nil || !isSold {
		t.Fatalf("seat 1 sold: %v, %v", isSold, err)
	}
}

// A batch with keyed members holds each keyed order id's advisory lock from
// before its statement to its end: KeyedPurchaseInFlight is true while the
// batch waits (here on a seat's row the test holds), false once it
// committed (the orders are then readable) or once a one-order refusal
// rolled its transaction back (the connection goes back to the pool clean).
func TestConfirmPurchases_KeyedOrdersLockedUntilTheirTransactionEnds(t *testing.T) {
	ctx := context.Background()
	s := seeded(t, 10)
	tx := lockSeatRow(t, s, 2)
	members := []Purchase{
		{TicketID: 1, OrderID: uuid.New(), BuyerID: "a", IdempotencyKey: "k"},
		{TicketID: 2, OrderID: uuid.New(), BuyerID: "b", IdempotencyKey: "k"},
		{TicketID: 3, OrderID: uuid.New(), BuyerID: "c"},
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.confirmPurchases(ctx, members)
		done <- err
	}()
	inFlight := func(id uuid.UUID) bool {
		t.Helper()
		f, err := s.KeyedPurchaseInFlight(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	deadline := time.Now().Add(5 * time.Second)
	for !inFlight(members[0].OrderID) || !inFlight(members[1].OrderID) {
		if time.Now().After(deadline) {
			t.Fatal("a waiting batch's keyed orders must be locked")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := s.Order(ctx, members[0].OrderID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("not committed yet: %v", err)
	}
	if inFlight(members[2].OrderID) || inFlight(uuid.New()) {
		t.Fatal("a keyless member or an unknown id is not locked")
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, m := range members[:2] {
		if inFlight(m.OrderID) {
			t.Fatal("a committed batch's locks must be free")
		}
		if _, err := s.Order(ctx, m.OrderID); err != nil {
			t.Fatal(err)
		}
	}
	// A keyed one-order refusal (a RAISE in the transaction) is rolled back.
	refused := Purchase{TicketID: 1, OrderID: uuid.New(), BuyerID: "d", IdempotencyKey: "k"}
	var sold *SoldError
	if _, _, err := s.Confirm(ctx, refused); !errors.As(err, &sold) || sold.OrderID != members[0].OrderID {
		t.Fatalf("want sold to %s, got %v", members[0].OrderID, err)
	}
	if inFlight(refused.OrderID) {
		t.Fatal("a refused purchase's lock must be free")
	}
	if _, _, err := s.Confirm(ctx, Purchase{TicketID: 4, OrderID: uuid.New(), BuyerID: "d", IdempotencyKey: "k"}); err != nil {
		t.Fatalf("after a refusal the store still confirms: %v", err)
	}
}

// A keyed batch commits in its own statement only while PostgreSQL's
// clock is before the statement's deadline less CommitSkewMargin
// (commit_before, through confirm_purchases_locked and, for one member,
// confirm_purchase_locked): a batch that waited past that on a seat's row
// is rolled back by the server (FO008, before the pod's own deadline), its
// order never appears and its lock is free, so GET /v1/orders/{id}'s 404
// is final for it; a batch in time commits.
func TestConfirmPurchases_KeyedBatchPastItsDeadlineIsRolledBackByTheServer(t *testing.T) {
	for _, n := range []int{2, 1} {
		t.Run(fmt.Sprintf("%d members", n), func(t *testing.T) {
			ctx := context.Background()
			s := seeded(t, 10)
			tx := lockSeatRow(t, s, 1)
			late := []Purchase{
				{TicketID: 1, OrderID: uuid.New(), BuyerID: "a", IdempotencyKey: "k1"},
				{TicketID: 2, OrderID: uuid.New(), BuyerID: "b", IdempotencyKey: "k2"},
			}[:n]
			// The cutoff is 1 s from now; the seat's row is held for 1.5 s,
			// 0.5 s before the context's own deadline (no cancel from the pod).
			short, cancel := context.WithTimeout(ctx, CommitSkewMargin+time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := s.confirmPurchases(short, late)
				done <- err
			}()
			time.Sleep(1500 * time.Millisecond)
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			err := <-done
			var pgErr *pgconn.PgError
			if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &pgErr) || pgErr.Code != "FO008" {
				t.Fatalf("a batch past its cutoff: %v, want the server's refusal FO008 as a deadline error", err)
			}
			for _, p := range late {
				if _, err := s.Order(ctx, p.OrderID); !errors.Is(err, ErrNotFound) {
					t.Fatalf("order of seat %d after its batch's cutoff: %v, want none", p.TicketID, err)
				}
				if f, err := s.KeyedPurchaseInFlight(ctx, p.OrderID); err != nil || f {
					t.Fatalf("lock of a rolled-back order: %v, %v", f, err)
				}
			}
			inTime, cancel2 := context.WithTimeout(ctx, CommitSkewMargin+500*time.Millisecond)
			defer cancel2()
			res, err := s.confirmPurchases(inTime, late)
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range res {
				if r.outcome != "ok" {
					t.Fatalf("member %d in time: %q", i, r.outcome)
				}
				if _, err := s.Order(ctx, late[i].OrderID); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// A keyed batch commits only until CommitSkewMargin before its earliest
// member's deadline, so a member with less time than that (and
// minStatementTime) left is not sent: it would roll back the whole batch,
// members with seconds to spare included.
func TestBatcher_AKeyedMemberWithinTheCommitMargin_IsNotSent(t *testing.T) {
	ctx := context.Background()
	s := seeded(t, 10)
	b := s.purchases
	short := &call[Purchase, memberResult]{req: Purchase{TicketID: 1, OrderID: uuid.New(), BuyerID: "short", IdempotencyKey: "k1"},
		done: make(chan outcome[memberResult], 1), deadline: time.Now().Add(CommitSkewMargin - 200*time.Millisecond)}
	long := &call[Purchase, memberResult]{req: Purchase{TicketID: 2, OrderID: uuid.New(), BuyerID: "long", IdempotencyKey: "k2"},
		done: make(chan outcome[memberResult], 1), deadline: time.Now().Add(4 * time.Second)}
	b.send([]*call[Purchase, memberResult]{short, long})
	if o := <-short.done; !errors.Is(o.err, context.DeadlineExceeded) {
		t.Fatalf("the member within the margin: want DeadlineExceeded, got %+v", o)
	}
	if o := <-long.done; o.err != nil || o.res.outcome != "ok" {
		t.Fatalf("the member with time to spare must commit, got %+v", o)
	}
	if sold, _, _ := s.TicketState(ctx, 1); sold {
		t.Fatal("the member within the margin was sent: seat 1 sold")
	}
}

// ClockOffset of a server on this host: the same clock, so the offset is
// within its uncertainty (and a few milliseconds of scheduling).
func TestClockOffset_SameHost(t *testing.T) {
	s := seeded(t, 1)
	off, unc, err := s.ClockOffset(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if d := off.Abs(); d > unc+5*time.Millisecond {
		t.Fatalf("offset %s ± %s against the same clock", off, unc)
	}
}

// lockSeatRow holds seat id's row in a transaction of its own, which the
// test rolls back to let the statements waiting on it go on (rolled back
// at the test's end too).
func lockSeatRow(t *testing.T, s *Store, id int64) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(ctx) })
	if _, err := tx.Exec(ctx, `SELECT 1 FROM tickets WHERE id = $1 FOR UPDATE`, id); err != nil {
		t.Fatal(err)
	}
	return tx
}

// cutProxy forwards TCP to PostgreSQL; cut closes the client side of every
// connection and keeps the server side open, and refuses new connections
// from then on, as when the network between the pod and the server breaks
// after a statement reached the server, which goes on running it (pgx's
// CancelRequest, sent on a new connection, cannot reach it either).
type cutProxy struct {
	ln      net.Listener
	mu      sync.Mutex
	clients []net.Conn
	isCut   bool
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln}
	var servers []net.Conn
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range append(servers, p.clients...) {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			isCut := p.isCut
			p.mu.Unlock()
			if isCut {
				c.Close()
				continue
			}
			r, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.clients, servers = append(p.clients, c), append(servers, r)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(r, c) }() // the server side stays open after a cut
			go func() { _, _ = io.Copy(c, r) }()
		}
	}()
	return p
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.isCut = true
	for _, c := range p.clients {
		c.Close()
	}
}

// A keyed batch whose connection breaks after its statement reached the
// server may still commit there, until the server's cutoff: its members
// are answered no earlier than their deadline, after which it cannot
// (GET's 404 is then final). Here the statement waits on a seat's row, the
// connection is cut, the row is freed and the order commits on the
// server: the buyer must not have been answered before the deadline.
func TestConfirmPurchases_KeyedBatchOnABrokenConnection_AnsweredNoEarlierThanItsDeadline(t *testing.T) {
	ctx := context.Background()
	direct, url := newStoreAt(t)
	if err := direct.Seed(ctx, 10); err != nil {
		t.Fatal(err)
	}
	proxy := newCutProxy(t, fmt.Sprintf("127.0.0.1:%d", pg.Port))
	s, err := Open(ctx, strings.Replace(url, fmt.Sprintf("127.0.0.1:%d", pg.Port), proxy.ln.Addr().String(), 1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	tx := lockSeatRow(t, direct, 1)
	p := Purchase{TicketID: 1, OrderID: uuid.New(), BuyerID: "a", IdempotencyKey: "k"}
	member, cancel := context.WithTimeout(ctx, CommitSkewMargin+2*time.Second)
	defer cancel()
	deadline, _ := member.Deadline()
	answered := make(chan error, 1)
	go func() {
		_, err := s.purchases.do(member, p)
		answered <- err
	}()
	testservers.Eventually(t, 5*time.Second, 10*time.Millisecond, "the statement to wait on the seat's row", func() error {
		var n int
		if err := direct.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%confirm_purchase_locked%'`).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return errors.New("not waiting yet")
		}
		return nil
	})
	proxy.cut()
	testservers.Eventually(t, 5*time.Second, 10*time.Millisecond, "the pod to see its connection fail", testservers.Holds(func() bool {
		return s.pool.Stat().TotalConns() == 0
	}))
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	testservers.Eventually(t, CommitSkewMargin, 10*time.Millisecond, "the order to commit on the server", func() error {
		_, err := direct.Order(ctx, p.OrderID)
		return err
	})
	err = <-answered
	if early := time.Until(deadline); early > 0 {
		t.Fatalf("answered %s before the deadline (%v), while the statement could still commit (it did)", early, err)
	}
	if err == nil {
		t.Fatal("the pod cannot know the outcome: want an error")
	}
}
