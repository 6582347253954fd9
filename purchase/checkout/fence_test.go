package checkout

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase/seatlock"
)

var (
	redisSrv *testservers.Redis
	saleSeq  atomic.Int64
)

func TestMain(m *testing.M) { os.Exit(testservers.Main(m, &redisSrv, nil)) }

// lockService is a Service over a real Redis lock space of its own sale
// (no store: for the steps that only talk to Redis).
func lockService(t *testing.T, saleName string) (*Service, *seatlock.Locks) {
	t.Helper()
	// A sale of its own per call: -count=N reruns find no keys of the last.
	saleName = fmt.Sprintf("%s-%d", saleName, saleSeq.Add(1))
	url, err := redisSrv.PurchaseURL(saleName)
	if err != nil {
		t.Fatal(err)
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	locks := seatlock.New(rdb, saleName, time.Minute)
	s := New(Config{Tickets: 10, LockTTL: time.Second, Sale: saleName, Secret: []byte("a test secret of at least 32 bytes")},
		locks, nil, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	return s, locks
}

// A fence refusal that names no order (refuse_seat's empty DETAIL: the
// order was cancelled between its two reads, the seat is on sale again)
// must leave no sold marker: "sold:" names no order a cancellation could
// match. The lock is given back and the pod does not remember the seat sold.
func TestFencedSold_NoOwner_NoMarkerLockGivenBack(t *testing.T) {
	ctx := context.Background()
	s, locks := lockService(t, "fenced")
	if r, err := locks.Acquire(ctx, 3, "tok-a"); err != nil || r.State != seatlock.Acquired {
		t.Fatalf("acquire: %+v %v", r, err)
	}
	s.fencedSold(3, "tok-a", uuid.Nil)
	if r, ok, err := locks.Peek(ctx, 3); err != nil || ok {
		t.Fatalf("an owner-less refusal left %+v (ok %v, %v) in Redis", r, ok, err)
	}
	if s.sold.has(3) {
		t.Fatal("an owner-less refusal must not make the pod remember the seat sold")
	}
	// With an owner the marker names it, as before.
	owner := uuid.New()
	if r, err := locks.Acquire(ctx, 4, "tok-b"); err != nil || r.State != seatlock.Acquired {
		t.Fatalf("acquire: %+v %v", r, err)
	}
	s.fencedSold(4, "tok-b", owner)
	s.Wait() // the marker is written behind the answer
	if r, ok, err := locks.Peek(ctx, 4); err != nil || !ok || r.State != seatlock.Sold || r.Owner != owner.String() {
		t.Fatalf("marker %+v %v %v, want sold:%s", r, ok, err, owner)
	}
}

// blockedMarks is a lock space whose MarkSold waits for release.
type blockedMarks struct {
	*seatlock.Locks
	release chan struct{}
}

func (b blockedMarks) MarkSold(ctx context.Context, id int64, orderID string) error {
	<-b.release
	return b.Locks.MarkSold(ctx, id, orderID)
}

// markSold answers before Redis does: the pod remembers the seat sold at
// once, the marker is written behind the answer, and Wait (called before
// the pod closes its Redis client) waits for that write.
func TestMarkSold_TheAnswerDoesNotWaitForTheMarker(t *testing.T) {
	ctx := context.Background()
	s, locks := lockService(t, "marks")
	b := blockedMarks{Locks: locks, release: make(chan struct{})}
	s.locks = b
	if r, err := locks.Acquire(ctx, 5, "tok"); err != nil || r.State != seatlock.Acquired {
		t.Fatalf("acquire: %+v %v", r, err)
	}
	owner := uuid.New()
	returned := make(chan struct{})
	go func() { s.markSold(5, owner.String()); close(returned) }()
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		close(b.release)
		t.Fatal("markSold waited for Redis")
	}
	if !s.sold.has(5) {
		t.Fatal("the pod must remember the seat sold before the marker lands")
	}
	waited := make(chan struct{})
	go func() { s.Wait(); close(waited) }()
	select {
	case <-waited:
		t.Fatal("Wait returned while a marker was still being written")
	case <-time.After(50 * time.Millisecond):
	}
	close(b.release)
	<-waited
	if r, ok, err := locks.Peek(ctx, 5); err != nil || !ok || r.State != seatlock.Sold || r.Owner != owner.String() {
		t.Fatalf("after Wait the marker is %+v (%v, %v), want sold:%s", r, ok, err, owner)
	}
	// After Wait (the pod is closing) an answer writes no marker: its
	// client is about to close.
	s.locks = locks
	s.markSold(6, uuid.NewString())
	s.sideEffects.Wait() // a write it started would be done
	if !s.sold.has(6) {
		t.Fatal("the pod must still remember the seat sold")
	}
	if r, ok, err := locks.Peek(ctx, 6); err != nil || ok {
		t.Fatalf("a marker written after Wait: %+v (%v, %v)", r, ok, err)
	}
}
