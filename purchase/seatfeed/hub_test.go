package seatfeed

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flux-order/flux-order/internal/ssetest"
	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase/orderstore"
	"github.com/flux-order/flux-order/purchase/sale"
)

// fakeSeats is a Source in memory: every change gets the next version, and
// SeatChanges returns the seats changed at or after the cursor, as the
// real query does. The real-database tests of the feed are in package
// purchase (events_test.go); these test the hub's own logic.
type fakeSeats struct {
	mu      sync.Mutex
	version int64
	sold    map[int64]int64 // seat → version it was sold at
	reads   int
}

func newFakeSeats() *fakeSeats { return &fakeSeats{sold: map[int64]int64{}} }

func (f *fakeSeats) sell(id int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.version++
	f.sold[id] = f.version
}

func (f *fakeSeats) SeatStates(context.Context) (orderstore.SeatSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	snap := orderstore.SeatSnapshot{Cursor: strconv.FormatInt(f.version+1, 10), Clock: time.Now()}
	for id := range f.sold {
		snap.Sold = append(snap.Sold, id)
	}
	return snap, nil
}

func (f *fakeSeats) SeatChanges(_ context.Context, cursor string, _ time.Time) (orderstore.SeatChangeSet, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	from, _ := strconv.ParseInt(cursor, 10, 64)
	set := orderstore.SeatChangeSet{Cursor: strconv.FormatInt(f.version+1, 10), Clock: time.Now()}
	for id, v := range f.sold {
		if v >= from {
			set.Seats = append(set.Seats, orderstore.SeatState{ID: id, Sold: true})
		}
	}
	return set, nil
}

func newTestHub(src Source, tickets int64) *Hub {
	h := New(src, func() int64 { return tickets }, func() sale.Facts { return sale.Facts{Tickets: tickets} }, 0,
		prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	h.poll = 20 * time.Millisecond
	return h
}

// serve serves the hub's stream on a free port, with the given server
// timeouts (0: none).
func serve(t *testing.T, h *Hub, timeout time.Duration) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h.Stream(w, r); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		}
	}))
	srv.Config.ReadTimeout, srv.Config.WriteTimeout = timeout, timeout
	srv.Start()
	t.Cleanup(func() { h.Close(); srv.Close() })
	return srv.URL
}

// One feed per pod: pages share one hub, which stops when the last leaves,
// and a new page starts it again.
func TestHub_OnePerPod_StopsWhenNoPageIsLeft(t *testing.T) {
	h := newTestHub(newFakeSeats(), 5)
	url := serve(t, h, 0)
	var stops []func()
	for range 3 {
		events, stop := ssetest.Open(t, url)
		ssetest.Next(t, events, "snapshot", 5*time.Second)
		stops = append(stops, stop)
	}
	h.mu.Lock()
	running, clients, stopped := h.running, len(h.clients), h.stopped
	h.mu.Unlock()
	if !running || clients != 3 {
		t.Fatalf("running %v with %d clients, want one hub for 3", running, clients)
	}
	for _, stop := range stops {
		stop()
	}
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		t.Fatal("the hub still runs 2 s after the last page left")
	}
	events, stop := ssetest.Open(t, url)
	defer stop()
	ssetest.Next(t, events, "snapshot", 5*time.Second)
}

// Issue 17: a page that does not read is not cut off (its EventSource would
// reconnect into the same state, forever): once its buffer is full it gets
// the counters only, and a fresh snapshot once it has read what was queued.
// The hub and the other pages go on meanwhile.
func TestHub_SlowPage_GetsCountsThenAFreshSnapshot(t *testing.T) {
	src := newFakeSeats()
	h := newTestHub(src, 5)
	defer h.Close()
	slow, err := h.subscribe()
	if err != nil {
		t.Fatal(err)
	}
	fast, err := h.subscribe()
	if err != nil {
		t.Fatal(err)
	}
	defer h.unsubscribe(fast)
	testservers.Eventually(t, 5*time.Second, 10*time.Millisecond, "the slow page's first snapshot queued", testservers.Holds(func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(slow.events) >= 2
	}))
	for i := range 3 * feedClientBuffer {
		h.mu.Lock()
		h.broadcast(newEvent(fmt.Appendf(nil, "event: test\ndata: %d\n\n", i)))
		h.mu.Unlock()
		select {
		case <-fast.events:
		case <-time.After(time.Second):
			t.Fatal("the reading page got nothing")
		}
	}
	h.mu.Lock()
	behind := slow.behind
	h.mu.Unlock()
	select {
	case <-slow.gone:
		t.Fatal("a page that fell behind was cut off")
	default:
	}
	if !behind {
		t.Fatal("a page whose buffer filled up is not marked behind")
	}
	for len(slow.events) > 0 { // the page reads what was queued
		<-slow.events
	}
	src.sell(2)
	var names []string
	for {
		select {
		case ev := <-slow.events:
			name := strings.TrimPrefix(strings.SplitN(string(ev.plain), "\n", 2)[0], "event: ")
			names = append(names, name)
			if name == "snapshot" {
				if !strings.Contains(strings.Join(names, ","), "counts") {
					t.Fatalf("events after falling behind: %v, want counts before the snapshot", names)
				}
				return
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no fresh snapshot after the page caught up; events %v", names)
		}
	}
}

// A stream outlives the server's read and write timeouts: each write moves
// the write deadline, and the read deadline is lifted.
func TestHub_StreamOutlivesServerTimeouts(t *testing.T) {
	old := feedHeartbeat
	feedHeartbeat = 100 * time.Millisecond
	defer func() { feedHeartbeat = old }()
	src := newFakeSeats()
	h := newTestHub(src, 5)
	url := serve(t, h, 300*time.Millisecond)
	events, stop := ssetest.Open(t, url)
	defer stop()
	ssetest.Next(t, events, "snapshot", 5*time.Second)
	// Outlive both timeouts: proof is heartbeats arriving after them.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		ssetest.Next(t, events, "comment", time.Second)
	}
	src.sell(4)
	ssetest.WaitSeat(t, events, 4, ssetest.Sold, time.Second)
}

// After Close, a new page is refused before anything is written, so the
// API can answer 503 and the page reconnects to another pod.
func TestHub_Closed_RefusesNewStreams(t *testing.T) {
	h := newTestHub(newFakeSeats(), 5)
	h.Close()
	rec := httptest.NewRecorder()
	if err := h.Stream(rec, httptest.NewRequest(http.MethodGet, "/v1/events", nil)); err != ErrClosed {
		t.Fatalf("want ErrClosed, got %v", err)
	}
	if rec.Code != http.StatusOK || rec.Body.Len() != 0 || len(rec.Header()) != 0 {
		t.Fatalf("a refused stream must write nothing, got %d %q %v", rec.Code, rec.Body, rec.Header())
	}
}

// Issue 17: a pod serves at most its cap of streams; one more is refused
// before anything is written (the API answers 503 with Retry-After), and a
// stream that ends makes room again.
func TestHub_Cap_RefusesTheStreamBeyondIt(t *testing.T) {
	h := newTestHub(newFakeSeats(), 5)
	h.max = 2
	url := serve(t, h, 0)
	_, stop1 := ssetest.Open(t, url)
	_, stop2 := ssetest.Open(t, url)
	defer stop2()
	testservers.Eventually(t, 2*time.Second, 10*time.Millisecond, "two streams open", testservers.Holds(func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.clients) == 2
	}))
	rec := httptest.NewRecorder()
	if err := h.Stream(rec, httptest.NewRequest(http.MethodGet, "/v1/events", nil)); err != ErrFull || rec.Body.Len() != 0 {
		t.Fatalf("a third stream: want ErrFull with nothing written, got %v and %q", err, rec.Body)
	}
	if got := testutil.ToFloat64(h.refused); got != 1 {
		t.Fatalf("refused streams counted %v, want 1", got)
	}
	stop1()
	testservers.Eventually(t, 2*time.Second, 10*time.Millisecond, "room for a stream again", testservers.Holds(func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.clients) < 2
	}))
	events, stop3 := ssetest.Open(t, url)
	defer stop3()
	ssetest.Next(t, events, "snapshot", 5*time.Second)
}
