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
