package waitingroom

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flux-order/flux-order/purchase/orderstore"
	"github.com/flux-order/flux-order/purchase/sale"
)

// slowJoins is a Store whose joins take delay; nothing else is called.
type slowJoins struct {
	delay time.Duration
	mu    sync.Mutex
	seq   int64
}

func (f *slowJoins) JoinQueue(_ context.Context, buyers []string) (map[string]orderstore.Joined, error) {
	time.Sleep(f.delay) // the database is slow: the view goes stale meanwhile
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]orderstore.Joined{}
	for _, b := range buyers {
		f.seq++
		out[b] = orderstore.Joined{BuyerID: b, Seq: f.seq, JoinedAt: time.Now()}
	}
	return out, nil
}

func (f *slowJoins) QueueSnapshot(context.Context, int64, time.Time, int) (orderstore.QueueState, []orderstore.Admission, error) {
	panic("not called: the test sets the view")
}
func (f *slowJoins) TryAdmitter(context.Context) (*orderstore.Admitter, error) {
	return nil, orderstore.ErrNotAdmitter
}
func (f *slowJoins) Counts(context.Context) (orderstore.Counts, error) { panic("not called") }
func (f *slowJoins) LeaveQueue(context.Context, string, int64, time.Duration) (bool, error) {
	panic("not called")
}
func (f *slowJoins) QueueLeft(context.Context, int64, int) ([]orderstore.Left, error) {
	panic("not called")
}

// Issue 17, defect 8: a view that goes stale while a join waits for its
// batch must not crash the join (it answered nothing, the connection was
// reset): the buyer gets their place from the view that was checked.
func TestJoin_ViewStaleAfterTheBuyerJoined_AnswersThePlace(t *testing.T) {
	q := New("sale", []byte("secret"), Settings{AdmitPerSecond: 10}, &slowJoins{delay: 200 * time.Millisecond},
		func() sale.Schedule { return sale.Schedule{} }, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go q.joinLoop(ctx)
	// Fresh enough for the first check, stale by the time the join commits.
	q.view.Store(&queueView{at: time.Now().Add(-staleView + 50*time.Millisecond), available: 10})
	p, id, err := q.Join(ctx, "alice")
	if err != nil || id == "" || p.State != StateWaiting {
		t.Fatalf("got %+v %q %v, want a waiting place", p, id, err)
	}
	if _, err := q.currentView(time.Now()); err == nil {
		t.Fatal("the view did not go stale during the join: the test proves nothing")
	}
}

// A join that waited for its batch, and whose batch commits within the
// batch's own timeout, gets its place: not a 503 because the buyer's clock
// (started before the batch's) ran out first: a join answered 503 whose
// row was in the queue (one of two suspects of the bench's join 503s after
// a pod's start, docs/benchmarks.md).
func TestJoin_BatchCommitsWithinItsTimeout_AfterTheMembersOwn_AnswersThePlace(t *testing.T) {
	store := &slowJoins{delay: 700 * time.Millisecond}
	q := New("sale", []byte("secret"), Settings{AdmitPerSecond: 10}, store,
		func() sale.Schedule { return sale.Schedule{} }, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	q.joinTimeout = time.Second
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	q.view.Store(&queueView{at: time.Now(), available: 10})
	// The join waits 500 ms before its batch starts (a batch ahead of it),
	// and its batch takes 700 ms: it commits 1.2 s after the buyer came,
	// within its own 1 s.
	time.AfterFunc(500*time.Millisecond, func() { go q.joinLoop(ctx) })
	start := time.Now()
	p, id, err := q.Join(ctx, "alice")
	if err != nil || id == "" || p.State != StateWaiting {
		t.Fatalf("got %+v %q %v after %v, want a waiting place", p, id, err, time.Since(start))
	}
	if d := time.Since(start); d < q.joinTimeout {
		t.Fatalf("answered after %v: the batch did not outlast the member's own %v, the test proves nothing", d, q.joinTimeout)
	}
}

// A pod that starts with the room on is warm (ready) only once it has a
// view, and stays warm when the view goes stale later (an outage is every
// pod's); a pod that starts with the room off is warm at once, and stays
// so when the room is switched on.
func TestWarm_AfterTheFirstView_Latched(t *testing.T) {
	newRoom := func(on bool) *Room {
		wr := Settings{}
		if on {
			wr.AdmitPerSecond = 10
		}
		return New("sale", []byte("secret"), wr, &slowJoins{},
			func() sale.Schedule { return sale.Schedule{} }, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	}
	q := newRoom(true)
	if q.Warm() {
		t.Fatal("warm with the room on and no view")
	}
	q.view.Store(&queueView{at: time.Now(), available: 10})
	if !q.Warm() {
		t.Fatal("not warm after the first view")
	}
	q.view.Store(&queueView{at: time.Now().Add(-2 * staleView)})
	if !q.Warm() {
		t.Fatal("not warm once the view went stale: an outage took the pod out of the Service")
	}
	q = newRoom(false)
	if !q.Warm() {
		t.Fatal("not warm with the room off")
	}
	q.Set(Settings{AdmitPerSecond: 10})
	if !q.Warm() {
		t.Fatal("not warm after the room was switched on live")
	}
}
