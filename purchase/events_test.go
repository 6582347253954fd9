package purchase

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/flux-order/flux-order/internal/testservers"
)

// sseEvent is one server-sent event as a page sees it.
type sseEvent struct{ name, data string }

// seatEvent is the data of a snapshot or seats event.
type seatEvent struct {
	feedCounts
	Seats json.RawMessage `json:"seats"`
}

// openEvents connects to GET /v1/events and returns its events on a
// channel, closed when the stream ends.
func openEvents(t *testing.T, base string) (<-chan sseEvent, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		cancel()
		t.Fatalf("GET /v1/events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	out := make(chan sseEvent, 1024)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" || ev.data != "" {
					out <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
				out <- sseEvent{name: "comment", data: line}
			case strings.HasPrefix(line, "event: "):
				ev.name = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[len("data: "):]
			}
		}
	}()
	return out, cancel
}

// nextEvent waits for the next event named name (skipping others).
func nextEvent(t *testing.T, events <-chan sseEvent, name string, within time.Duration) sseEvent {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("the stream ended while waiting for a %q event", name)
			}
			if ev.name == name {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %q event within %v", name, within)
		}
	}
}

func decodeSnapshot(t *testing.T, ev sseEvent) (seatEvent, []byte) {
	t.Helper()
	var d seatEvent
	if err := json.Unmarshal([]byte(ev.data), &d); err != nil {
		t.Fatal(err)
	}
	var b64 string
	if err := json.Unmarshal(d.Seats, &b64); err != nil {
		t.Fatal(err)
	}
	packed, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	states := make([]byte, d.Tickets+1)
	for id := int64(1); id <= d.Tickets; id++ {
		states[id] = packed[(id-1)/4] >> ((id - 1) % 4 * 2) & 3
	}
	return d, states
}

// waitSeat waits until a seats event sets seat id to state, and returns the
// counts of that event.
func waitSeat(t *testing.T, events <-chan sseEvent, id int64, state byte, within time.Duration) feedCounts {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ev := nextEvent(t, events, "seats", time.Until(deadline))
		var d seatEvent
		var pairs []int64
		if err := json.Unmarshal([]byte(ev.data), &d); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(d.Seats, &pairs); err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(pairs); i += 2 {
			if pairs[i] == id && byte(pairs[i+1]) == state {
				return d.feedCounts
			}
		}
	}
}

// A page gets the sale's facts and a snapshot of every seat first, then a
// delta within 1 s of a sale, with the counters.
func TestEvents_SnapshotThenDeltas(t *testing.T) {
	s := newTestSale(t, 9, func(c *Config) { c.DisplayName = "Feed" })
	if a := s.buy(2, "early"); a.status != http.StatusCreated {
		t.Fatalf("buy: %d %s", a.status, a.code)
	}
	events, stop := openEvents(t, s.pods[0].srv.URL)
	defer stop()
	var facts SaleFacts
	if err := json.Unmarshal([]byte(nextEvent(t, events, "sale", 5*time.Second).data), &facts); err != nil || facts.DisplayName != "Feed" {
		t.Fatalf("sale event: %+v %v", facts, err)
	}
	d, states := decodeSnapshot(t, nextEvent(t, events, "snapshot", 5*time.Second))
	if d.Tickets != 9 || d.Sold != 1 || d.Held != 0 || d.Available != 8 {
		t.Fatalf("snapshot counts: %+v", d.feedCounts)
	}
	for id := int64(1); id <= 9; id++ {
		if want := map[bool]byte{true: seatSold, false: seatAvailable}[id == 2]; states[id] != want {
			t.Fatalf("snapshot: seat %d state %d, want %d", id, states[id], want)
		}
	}
	start := time.Now()
	if a := s.buy(7, "bob"); a.status != http.StatusCreated {
		t.Fatalf("buy: %d %s", a.status, a.code)
	}
	c := waitSeat(t, events, 7, seatSold, time.Second)
	t.Logf("seat 7 sold on the stream %v after the 201", time.Since(start))
	if c.Sold != 2 || c.Available != 7 {
		t.Fatalf("counts after the sale: %+v", c)
	}
	// The display name is live on the stream too.
	s.pods[0].svc.SetDisplayName("Renamed")
	if err := json.Unmarshal([]byte(nextEvent(t, events, "sale", 2*time.Second).data), &facts); err != nil || facts.DisplayName != "Renamed" {
		t.Fatalf("sale event after the rename: %+v %v", facts, err)
	}
}

// A hold shows as held, and as available again once it lapses, with no
// write at expiry: the feed finds it by held_until.
func TestEvents_HoldThenExpiry(t *testing.T) {
	s := newTestSale(t, 5)
	events, stop := openEvents(t, s.pods[0].srv.URL)
	defer stop()
	nextEvent(t, events, "snapshot", 5*time.Second)
	if _, err := s.db.Exec(context.Background(), `SELECT * FROM hold_seat(3, gen_random_uuid(), 'carol', 700, 0)`); err != nil {
		t.Fatal(err)
	}
	if c := waitSeat(t, events, 3, seatHeld, time.Second); c.Held != 1 || c.Available != 4 {
		t.Fatalf("counts with the hold: %+v", c)
	}
	if c := waitSeat(t, events, 3, seatAvailable, 2*time.Second); c.Held != 0 || c.Available != 5 {
		t.Fatalf("counts after expiry: %+v", c)
	}
}

// Gap-free: a transaction that took its xid first but commits last is not
// skipped by the cursor (a "changed_xid > highest seen" cursor would).
func TestEvents_OutOfOrderCommitsAreNotMissed(t *testing.T) {
	s := newTestSale(t, 5)
	events, stop := openEvents(t, s.pods[0].srv.URL)
	defer stop()
	nextEvent(t, events, "snapshot", 5*time.Second)
	ctx := context.Background()
	early, err := s.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = early.Rollback(ctx) }()
	if _, err := early.Exec(ctx, `SELECT * FROM hold_seat(1, gen_random_uuid(), 'early', 60000, 0)`); err != nil {
		t.Fatal(err)
	}
	if a := s.buy(2, "late"); a.status != http.StatusCreated {
		t.Fatalf("buy: %d %s", a.status, a.code)
	}
	waitSeat(t, events, 2, seatSold, time.Second)
	time.Sleep(2 * feedPollInterval) // polls pass while the early transaction is open
	if err := early.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	waitSeat(t, events, 1, seatHeld, time.Second)
}

// One feed per pod: pages share one hub, which stops when the last leaves,
// and a new page starts it again.
func TestEvents_OneHubPerPod_StopsWhenNoPageIsLeft(t *testing.T) {
	s := newTestSale(t, 5)
	feed := s.pods[0].svc.page.feed
	var stops []func()
	for range 3 {
		events, stop := openEvents(t, s.pods[0].srv.URL)
		nextEvent(t, events, "snapshot", 5*time.Second)
		stops = append(stops, stop)
	}
	feed.mu.Lock()
	running, clients, stopped := feed.running, len(feed.clients), feed.stopped
	feed.mu.Unlock()
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
	events, stop := openEvents(t, s.pods[0].srv.URL)
	defer stop()
	nextEvent(t, events, "snapshot", 5*time.Second)
}

// A page that does not read is dropped once its buffer is full; the hub and
// the other pages go on.
func TestEvents_SlowPageIsDropped(t *testing.T) {
	s := newTestSale(t, 5)
	feed := s.pods[0].svc.page.feed
	slow, err := feed.subscribe()
	if err != nil {
		t.Fatal(err)
	}
	fast, err := feed.subscribe()
	if err != nil {
		t.Fatal(err)
	}
	defer feed.unsubscribe(fast)
	for i := range 3 * feedClientBuffer {
		feed.mu.Lock()
		feed.broadcast(fmt.Appendf(nil, "event: test\ndata: %d\n\n", i))
		feed.mu.Unlock()
		select {
		case <-fast.events:
		case <-time.After(time.Second):
			t.Fatal("the reading page got nothing")
		}
	}
	select {
	case <-slow.gone:
	default:
		t.Fatal("a page that never read is still subscribed")
	}
	select {
	case <-fast.gone:
		t.Fatal("the reading page was dropped")
	default:
	}
}

// A stream outlives the server's read and write timeouts: each write moves
// the write deadline, and the read deadline is lifted.
func TestEvents_StreamOutlivesServerTimeouts(t *testing.T) {
	s := newTestSale(t, 5)
	old := feedHeartbeat
	feedHeartbeat = 100 * time.Millisecond
	defer func() { feedHeartbeat = old }()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: s.pods[0].svc.Handler(), ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	events, stop := openEvents(t, "http://"+ln.Addr().String())
	defer stop()
	nextEvent(t, events, "snapshot", 5*time.Second)
	time.Sleep(time.Second) // > both timeouts
	if a := s.buy(4, "dora"); a.status != http.StatusCreated {
		t.Fatalf("buy: %d %s", a.status, a.code)
	}
	waitSeat(t, events, 4, seatSold, time.Second)
	nextEvent(t, events, "comment", time.Second) // heartbeats flow
}

// On SIGTERM the streams end when the listener closes, so they do not hold
// the drain: Serve returns long before the grace ends.
func TestEvents_StreamsEndOnShutdown(t *testing.T) {
	s := newTestSale(t, 5)
	port, err := testservers.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.cfg
	cfg.Listen = fmt.Sprintf("127.0.0.1:%d", port)
	cfg.ShutdownGrace, cfg.DrainDelay = 10*time.Second, 200*time.Millisecond
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc, closeAll, err := Start(t.Context(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll()
	ctx, sigterm := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, svc, log) }()
	base := "http://" + cfg.Listen
	eventuallyUp(t, base)
	events, stop := openEvents(t, base)
	defer stop()
	nextEvent(t, events, "snapshot", 5*time.Second)
	start := time.Now()
	sigterm()
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("Serve still running %v after SIGTERM with a page connected (grace %v)", time.Since(start), cfg.ShutdownGrace)
	}
	for range events { // the stream ended
	}
	t.Logf("drained in %v with a stream open", time.Since(start))
}
