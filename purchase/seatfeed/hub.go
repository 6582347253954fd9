// Package seatfeed is the pod's seat-change feed (docs/sale-page.md): ONE hub per pod polls
// Postgres while at least one page is connected and fans the changes out to
// every connected page. Postgres is the truth (a seat a page shows as sold
// is sold); the poll costs one indexed query per pod every PollInterval,
// whatever the number of buyers watching.
package seatfeed

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flux-order/flux-order/purchase/orderstore"
	"github.com/flux-order/flux-order/purchase/sale"
)

const (
	PollInterval = 250 * time.Millisecond // how often a hub with pages reads the changes
	// feedClientBuffer is how many events a page may fall behind before it
	// is dropped: its EventSource reconnects and starts from a fresh
	// snapshot, so a slow phone never holds the hub (or other buyers) up.
	feedClientBuffer = 32
)

// Seat states on the wire: 2 bits each in a snapshot, a number in a delta.
const (
	seatAvailable byte = 0
	seatHeld      byte = 1
	seatSold      byte = 2
)

// Hub is the hub. Its state is written by the hub goroutine only,
// under mu; subscribers read it under mu to get their snapshot, so that a
// page's snapshot and the deltas after it never miss or repeat a change.
type Hub struct {
	src     Source
	tickets func() int64
	facts   func() sale.Facts
	log     *slog.Logger
	poll    time.Duration
	max     int                   // most open streams
	refused prometheus.Counter    // streams refused at max
	opened  [2]prometheus.Counter // streams opened, identity and gzip

	mu      sync.Mutex
	clients map[*feedClient]struct{}
	running bool // the hub goroutine runs
	closed  bool // the server shuts down: streams end, no new ones
	ready   bool // state was loaded from Postgres
	stopped chan struct{}

	seats      []byte // index = seat id (0 unused)
	sold, held int64
	cursor     string    // xid8: pg_snapshot_xmin of the last poll
	clock      time.Time // the database's clock at the last poll
	snapshot   *event    // rendered snapshot event, nil when stale
	lastFacts  []byte    // last facts sent
	lastErr    time.Time // last logged poll error (hub goroutine only)
}

// feedClient is one connected page.
type feedClient struct {
	events chan *event
	gone   chan struct{} // closed when the hub dropped it or the server stops
	// behind: its buffer filled up. It gets the counters only until it has
	// read everything queued, then a fresh snapshot (catchUp). mu held.
	behind bool
}

// Source is where the hub reads the seats (*orderstore.Store).
type Source interface {
	SeatStates(ctx context.Context) (orderstore.SeatSnapshot, error)
	SeatChanges(ctx context.Context, cursor string, since time.Time) (orderstore.SeatChangeSet, error)
}

// DefaultMaxStreams is a pod's cap of open streams when none is given.
const DefaultMaxStreams = 10_000

// New returns a hub over src serving at most maxStreams pages (0:
// DefaultMaxStreams); tickets is the live inventory and facts the sale's
// public facts, sent whenever they change. Its series go to reg.
func New(src Source, tickets func() int64, facts func() sale.Facts, maxStreams int, reg prometheus.Registerer, log *slog.Logger) *Hub {
	if maxStreams <= 0 {
		maxStreams = DefaultMaxStreams
	}
	f := &Hub{src: src, tickets: tickets, facts: facts, log: log, poll: PollInterval, max: maxStreams, clients: map[*feedClient]struct{}{}}
	f.refused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "flux_order_seat_streams_refused_total",
		Help: "Seat streams (GET /v1/events) refused because the pod serves its cap (--max-streams).",
	})
	openedVec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flux_order_seat_streams_opened_total",
		Help: "Seat streams (GET /v1/events) opened, by content encoding (gzip when the page accepts it, else identity).",
	}, []string{"encoding"})
	f.opened = [2]prometheus.Counter{openedVec.WithLabelValues("identity"), openedVec.WithLabelValues("gzip")}
	reg.MustRegister(f.refused, openedVec, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "flux_order_seat_streams",
		Help: "Seat streams (GET /v1/events) open on this pod.",
	}, func() float64 {
		f.mu.Lock()
		defer f.mu.Unlock()
		return float64(len(f.clients))
	}))
	return f
}

// ErrClosed: the server shuts down; the page reconnects to another pod.
var ErrClosed = errors.New("the seat feed is closed")

// ErrFull: the pod serves its cap of streams; the page retries later (or
// reaches another pod).
var ErrFull = errors.New("the pod serves as many seat streams as it may")

// subscribe adds a page. Its first events are the snapshot and the sale's
// facts (queued now if the hub is ready, else when it is). The hub starts
// with the first page.
func (f *Hub) subscribe() (*feedClient, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, ErrClosed
	}
	if len(f.clients) >= f.max {
		f.refused.Inc()
		return nil, ErrFull
	}
	c := &feedClient{events: make(chan *event, feedClientBuffer), gone: make(chan struct{})}
	if f.ready {
		c.events <- f.factsEvent()
		c.events <- f.snapshotEvent()
	}
	f.clients[c] = struct{}{}
	if !f.running {
		f.running = true
		f.stopped = make(chan struct{})
		go f.run()
	}
	return c, nil
}

// unsubscribe removes a page; the hub stops at its next tick if it was the
// last one.
func (f *Hub) unsubscribe(c *feedClient) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.drop(c)
}

// drop forgets c and ends its stream (mu held).
func (f *Hub) drop(c *feedClient) {
	if _, ok := f.clients[c]; ok {
		delete(f.clients, c)
		close(c.gone)
	}
}

// close ends every stream and refuses new ones: on shutdown, pages
// reconnect to another pod instead of holding this one's drain.
func (f *Hub) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for c := range f.clients {
		f.drop(c)
	}
}

// broadcast queues ev for every page (mu held). A page whose buffer is
// full falls behind instead of being cut off (which would only make its
// EventSource reconnect into the same state): it gets the counters while it
// reads what is queued, and a fresh snapshot once it has (catchUp). The hub
// and the other pages never wait for it.
func (f *Hub) broadcast(ev *event) {
	var counts *event
	for c := range f.clients {
		if c.behind {
			if counts == nil {
				counts = f.countsEvent()
			}
			select {
			case c.events <- counts:
			default:
			}
			continue
		}
		select {
		case c.events <- ev:
		default:
			c.behind = true
		}
	}
}

// catchUp sends a fresh snapshot to every page that fell behind and has
// read everything queued since (mu held, state loaded).
func (f *Hub) catchUp() {
	for c := range f.clients {
		if c.behind && len(c.events) == 0 {
			c.behind = false
			c.events <- f.factsEvent()
			c.events <- f.snapshotEvent()
		}
	}
}

// run is the hub: load, then poll until no page is left.
func (f *Hub) run() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t := time.NewTicker(f.poll)
	defer t.Stop()
	for {
		if f.idle() {
			return
		}
		var err error
		if f.isReady() {
			err = f.pollOnce(ctx)
		} else {
			err = f.load(ctx)
		}
		if err != nil && time.Since(f.lastErr) >= time.Second {
			// Pages keep their last state; the next tick retries.
			f.lastErr = time.Now()
			f.log.Warn("the seat feed could not read the database; retrying", "err", err)
		}
		<-t.C
	}
}

func (f *Hub) isReady() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready
}

// idle stops the hub when no page is connected; the next page starts a new
// one from a fresh snapshot.
func (f *Hub) idle() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.clients) > 0 {
		return false
	}
	f.running, f.ready = false, false
	f.seats, f.snapshot, f.lastFacts = nil, nil, nil
	close(f.stopped)
	return true
}

// pollTimeout bounds one query of the hub: a slow database delays the feed,
// never stacks queries.
const pollTimeout = 2 * time.Second

// load reads every seat's state, and the cursor the first poll starts
// from, in one statement (one snapshot).
func (f *Hub) load(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, pollTimeout)
	defer cancel()
	snap, err := f.src.SeatStates(ctx)
	if err != nil {
		return sale.Unavailable(sale.ErrDatabaseUnavailable, err)
	}
	tickets := f.tickets()
	seats := make([]byte, tickets+1)
	var sold, held int64
	for _, id := range snap.Sold {
		if id <= tickets {
			seats[id] = seatSold
			sold++
		}
	}
	for _, id := range snap.Held {
		if id <= tickets && seats[id] == seatAvailable {
			seats[id] = seatHeld
			held++
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seats, f.sold, f.held = seats, sold, held
	f.cursor, f.clock = snap.Cursor, snap.Clock
	f.ready, f.snapshot = true, nil
	f.lastFacts = f.currentFacts()
	f.broadcast(f.factsEvent())
	f.broadcast(f.snapshotEvent())
	return nil
}

// pollOnce reads the seats changed since the last poll (changed_xid at or
// after the last cursor) and the holds that expired since (held_until in
// (last clock, now]), applies them and sends one delta with what really
// changed. Rows seen twice are harmless: each row is the seat's current
// state, not a difference.
func (f *Hub) pollOnce(ctx context.Context) error {
	f.mu.Lock()
	cursor, clock := f.cursor, f.clock
	f.mu.Unlock()
	qctx, cancel := context.WithTimeout(ctx, pollTimeout)
	defer cancel()
	ch, err := f.src.SeatChanges(qctx, cursor, clock)
	if err != nil {
		return sale.Unavailable(sale.ErrDatabaseUnavailable, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.catchUp()
	f.cursor, f.clock = ch.Cursor, ch.Clock
	if facts := f.currentFacts(); !bytes.Equal(facts, f.lastFacts) {
		f.lastFacts = facts
		f.broadcast(f.factsEvent())
	}
	if tickets := f.tickets(); tickets >= int64(len(f.seats)) {
		// The inventory grew: new seats are unsold. Pages resize from a
		// fresh snapshot.
		f.seats = append(f.seats, make([]byte, tickets+1-int64(len(f.seats)))...)
		f.snapshot = nil
		f.applyLocked(ch.Seats)
		f.broadcast(f.snapshotEvent())
		return nil
	}
	if delta := f.applyLocked(ch.Seats); len(delta) > 0 {
		f.snapshot = nil
		f.broadcast(f.deltaEvent(delta))
	}
	return nil
}

// applyLocked sets the seats' states and returns the pairs (id, state)
// that changed.
func (f *Hub) applyLocked(seats []orderstore.SeatState) []int64 {
	var delta []int64
	for _, st := range seats {
		if st.ID < 1 || st.ID >= int64(len(f.seats)) {
			continue
		}
		next := seatAvailable
		switch {
		case st.Sold:
			next = seatSold
		case st.Held:
			next = seatHeld
		}
		prev := f.seats[st.ID]
		if prev == next {
			continue
		}
		f.seats[st.ID] = next
		f.count(prev, -1)
		f.count(next, +1)
		delta = append(delta, st.ID, int64(next))
	}
	return delta
}

func (f *Hub) count(state byte, d int64) {
	switch state {
	case seatSold:
		f.sold += d
	case seatHeld:
		f.held += d
	}
}

func (f *Hub) currentFacts() []byte {
	b, _ := json.Marshal(f.facts())
	return b
}

// counts is the part of every seat event that carries the counters.
type feedCounts struct {
	Tickets   int64 `json:"tickets"`
	Sold      int64 `json:"sold"`
	Held      int64 `json:"held"`
	Available int64 `json:"available"`
}

func (f *Hub) counts() feedCounts {
	tickets := int64(len(f.seats) - 1)
	return feedCounts{Tickets: tickets, Sold: f.sold, Held: f.held, Available: tickets - f.sold - f.held}
}

// snapshotEvent renders every seat, 2 bits each (4 seats a byte, seat 1 in
// the low bits of byte 0), base64: 100,000 seats are 33 KB.
func (f *Hub) snapshotEvent() *event {
	if f.snapshot != nil {
		return f.snapshot
	}
	n := len(f.seats) - 1
	packed := make([]byte, (n+3)/4)
	for id := 1; id <= n; id++ {
		packed[(id-1)>>2] |= f.seats[id] << (uint(id-1) & 3 * 2)
	}
	body, _ := json.Marshal(struct {
		feedCounts
		Seats string `json:"seats"`
	}{f.counts(), base64.StdEncoding.EncodeToString(packed)})
	f.snapshot = f.event("snapshot", body)
	return f.snapshot
}

func (f *Hub) deltaEvent(delta []int64) *event {
	body, _ := json.Marshal(struct {
		feedCounts
		Seats []int64 `json:"seats"`
	}{f.counts(), delta})
	return f.event("seats", body)
}

func (f *Hub) factsEvent() *event { return f.event("sale", f.lastFacts) }

// countsEvent carries the counters alone: what a page that fell behind
// gets until it has caught up.
func (f *Hub) countsEvent() *event {
	body, _ := json.Marshal(f.counts())
	return f.event("counts", body)
}

// event renders one server-sent event. It carries no id: a reconnecting
// page gets a fresh snapshot, which is as small as a replay of what it
// missed would be (docs/sale-page.md).
func (f *Hub) event(name string, data []byte) *event {
	b := make([]byte, 0, len(data)+32)
	b = append(b, "event: "...)
	b = append(b, name...)
	b = append(b, "\ndata: "...)
	b = append(b, data...)
	return newEvent(append(b, "\n\n"...))
}
