package seatlock

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flux-order/flux-order/internal/testservers"
)

var srv *testservers.Redis

func TestMain(m *testing.M) { os.Exit(testservers.Main(m, &srv, nil)) }

func newLocks(t testing.TB, sale string, ttl time.Duration) *Locks {
	t.Helper()
	url, err := srv.PurchaseURL(sale) // the sale's ACL user, as in production
	if err != nil {
		t.Fatal(err)
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	return New(rdb, sale, ttl)
}

func TestAcquire_FirstWinsOthersSeeHeldThenSold(t *testing.T) {
	ctx := context.Background()
	l := newLocks(t, "acq", time.Minute)
	if r, err := l.Acquire(ctx, 1, "tok-a"); err != nil || r.State != Acquired {
		t.Fatalf("first: %+v %v", r, err)
	}
	if r, _ := l.Acquire(ctx, 1, "tok-a"); r.State != Acquired {
		t.Fatalf("the holder retrying with its own token must still hold the seat: %+v", r)
	}
	if r, _ := l.Acquire(ctx, 1, "tok-b"); r.State != Held {
		t.Fatalf("another buyer: want Held, got %+v", r)
	}
	if err := l.MarkSold(ctx, 1, "order-1"); err != nil {
		t.Fatal(err)
	}
	if r, _ := l.Acquire(ctx, 1, "tok-b"); r.State != Sold || r.Owner != "order-1" {
		t.Fatalf("after the sale: want Sold by order-1, got %+v", r)
	}
}

func TestRelease_NeverDeletesAnotherBuyersLock(t *testing.T) {
	ctx := context.Background()
	l := newLocks(t, "rel", 100*time.Millisecond)
	if _, err := l.Acquire(ctx, 5, "slow"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond) // the slow buyer's lock expires
	if r, _ := l.Acquire(ctx, 5, "fast"); r.State != Acquired {
		t.Fatalf("the expired lock must be free: %+v", r)
	}
	if ok, err := l.Release(ctx, 5, "slow"); err != nil || ok {
		t.Fatalf("the slow buyer's release must not delete the fast buyer's lock: %v %v", ok, err)
	}
	if r, _ := l.Acquire(ctx, 5, "third"); r.State != Held {
		t.Fatalf("the fast buyer must still hold seat 5: %+v", r)
	}
	if ok, _ := l.Release(ctx, 5, "fast"); !ok {
		t.Fatal("the holder's release must succeed")
	}
}

func TestAcquireAny_PopsFreeSeatsAndSaysWhenEmpty(t *testing.T) {
	ctx := context.Background()
	l := newLocks(t, "any", time.Minute)
	if _, err := l.AcquireAny(ctx, "t0", l.TTL(), 4); !errors.Is(err, ErrPoolEmpty) {
		t.Fatalf("empty pool: want ErrPoolEmpty, got %v", err)
	}
	if err := l.Refill(ctx, []int64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(ctx, 2, "someone"); err != nil { // held by a specific-seat buyer
		t.Fatal(err)
	}
	got := map[int64]bool{}
	for _, tok := range []string{"t1", "t2"} {
		id, err := l.AcquireAny(ctx, tok, l.TTL(), 4)
		if err != nil || id == 2 || got[id] {
			t.Fatalf("want a distinct free seat other than the held 2, got %d %v", id, err)
		}
		got[id] = true
	}
	if _, err := l.AcquireAny(ctx, "t3", l.TTL(), 4); !errors.Is(err, ErrPoolEmpty) {
		t.Fatalf("after popping every seat: want ErrPoolEmpty, got %v", err)
	}
	if _, err := l.Release(ctx, 2, "someone"); err != nil { // the held seat's buyer gives up: back in the pool
		t.Fatal(err)
	}
	if id, err := l.AcquireAny(ctx, "t4", l.TTL(), 4); err != nil || id != 2 {
		t.Fatalf("a released seat returns to the pool: got %d %v", id, err)
	}
}

func TestHoldMarker_OnHoldExpiresAndIsPutBack(t *testing.T) {
	ctx := context.Background()
	l := newLocks(t, "hold", 5*time.Second)
	tok := HoldToken("h1")
	if r, err := l.AcquireFor(ctx, 1, tok, 200*time.Millisecond); err != nil || r.State != Acquired {
		t.Fatalf("hold: %+v %v", r, err)
	}
	if r, _ := l.Acquire(ctx, 1, "buyer"); r.State != OnHold || r.Owner != "h1" {
		t.Fatalf("a purchase must see the hold: %+v", r)
	}
	time.Sleep(300 * time.Millisecond) // the hold's own expiry, not lockTTL's
	if r, _ := l.Acquire(ctx, 1, "buyer"); r.State != Acquired {
		t.Fatalf("the expired hold's seat must be free: %+v", r)
	}
	// Postgres says hold h2 still lives: our lock token becomes its marker.
	until := time.Now().Add(300 * time.Millisecond)
	if err := l.PutHold(ctx, 1, "buyer", "h2", until); err != nil {
		t.Fatal(err)
	}
	if r, ok, _ := l.Peek(ctx, 1); !ok || r.State != OnHold || r.Owner != "h2" {
		t.Fatalf("want h2's marker, got %+v %v", r, ok)
	}
	// Never over another token or a sold seat.
	if err := l.MarkSold(ctx, 1, "o1"); err != nil {
		t.Fatal(err)
	}
	if err := l.PutHold(ctx, 1, "buyer", "h3", until); err != nil {
		t.Fatal(err)
	}
	if r, _, _ := l.Peek(ctx, 1); r.State != Sold {
		t.Fatalf("a sold seat must stay sold: %+v", r)
	}
	if r, _ := l.Acquire(ctx, 2, "x"); r.State != Acquired {
		t.Fatal(r)
	}
	if err := l.PutHold(ctx, 2, "x", "h4", time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := l.Peek(ctx, 2); ok {
		t.Fatal("a hold that ended meanwhile must leave the seat free, not locked")
	}
}

// ExpireHold re-expires only the marker the attempt wrote: a marker gone
// meanwhile (the hold released between a keyed retry's replay and this)
// is not written again, which would refuse the free seat until the
// hold's old expiry; another's marker is left alone.
func TestExpireHold_OwnMarkerOnly_NeverWritesOne(t *testing.T) {
	ctx := context.Background()
	l := newLocks(t, "expire", 5*time.Second)
	tok := HoldToken("h1")
	if r, err := l.AcquireFor(ctx, 1, tok, time.Minute); err != nil || r.State != Acquired {
		t.Fatalf("hold: %+v %v", r, err)
	}
	if err := l.ExpireHold(ctx, 1, tok, "h1", time.Now().Add(200*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if r, _ := l.Acquire(ctx, 1, "buyer"); r.State != OnHold {
		t.Fatalf("the marker must still hold the seat: %+v", r)
	}
	time.Sleep(300 * time.Millisecond) // the new expiry, not the minute
	if r, _ := l.Acquire(ctx, 1, "buyer"); r.State != Acquired {
		t.Fatalf("the marker must end with the hold: %+v", r)
	}
	// Released meanwhile: nothing is written.
	if err := l.ExpireHold(ctx, 2, tok, "h1", time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := l.Peek(ctx, 2); ok {
		t.Fatal("a released hold's marker was written again")
	}
	// Another buyer's lock stays as it is.
	if r, _ := l.Acquire(ctx, 3, "other"); r.State != Acquired {
		t.Fatal(r)
	}
	if err := l.ExpireHold(ctx, 3, tok, "h1", time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if r, _, _ := l.Peek(ctx, 3); r.State == OnHold {
		t.Fatalf("another's lock became a hold marker: %+v", r)
	}
}

// Unsell removes a cancelled order's marker, and an owner-less "sold:"
// (written when a fence refusal raced the cancellation: it names no order,
// so it would otherwise refuse the free seat forever), never another
// order's marker or a buyer's lock.
func TestUnsell_NamedAndOwnerlessMarkersGo_OthersStay(t *testing.T) {
	ctx := context.Background()
	l := newLocks(t, "unsell", time.Minute)
	for id, owner := range map[int64]string{1: "cancelled", 2: "", 3: "resold"} {
		if err := l.MarkSold(ctx, id, owner); err != nil {
			t.Fatal(err)
		}
	}
	if r, _ := l.Acquire(ctx, 4, "tok-a"); r.State != Acquired {
		t.Fatal(r)
	}
	seats := []SoldSeat{{1, "cancelled"}, {2, "cancelled"}, {3, "cancelled"}, {4, "cancelled"}}
	if n, err := l.Unsell(ctx, seats); err != nil || n != 2 {
		t.Fatalf("unsell: %d %v, want 2 seats freed", n, err)
	}
	for id, want := range map[int64]bool{1: false, 2: false, 3: true, 4: true} {
		if _, ok, err := l.Peek(ctx, id); err != nil || ok != want {
			t.Fatalf("seat %d: marker present %v (%v), want %v", id, ok, err, want)
		}
	}
}
