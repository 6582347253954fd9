// Package loadtest is the engine of `flux-order loadtest`: it sends purchase
// requests to a sale's API in a closed or open model, counts every answer by
// outcome with its latency, and audits the sale's database afterwards.
//
// It speaks HTTP/1.1 itself over keep-alive connections, one per worker,
// with requests built into reused buffers: a load client must not be what
// limits a test.
package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// Order is a 201 answer as the audit needs it.
type Order struct {
	ID       uuid.UUID `json:"orderId"`
	TicketID int64     `json:"ticketId"`
}

// Snapshot is the progress of a running test.
type Snapshot struct {
	Elapsed time.Duration
	Total   int64
	Counts  [numOutcomes]int64
	Done    bool // the last snapshot, after every answer
}

// Result is a finished test: its summary, and the orders it was answered.
type Result struct {
	Summary Summary
	Created []Order
}

// StoppedBySoldOut is Summary.StoppedBy of a load that stopped because
// the sale sold out (UntilSoldOut).
const StoppedBySoldOut = "sold-out"

// Why a test stopped.
const (
	stopDuration    = "duration"
	stopRequests    = "requests"
	stopSoldOut     = StoppedBySoldOut
	stopInterrupted = "interrupted"
)

type engine struct {
	ctx   context.Context
	cfg   Config
	t     target
	api   *apiClient
	build *requestBuilder
	pick  picker
	open  bool
	// gapNs is the time between two scheduled requests (open model).
	gapNs float64
	start time.Time

	seq        atomic.Int64
	stopped    atomic.Bool
	stopCh     chan struct{}
	stopOnce   sync.Once
	stopReason string
	conns      atomic.Int64
	// lastCreated is when the latest 201 arrived, in ns from start.
	lastCreated atomic.Int64

	stats    [numOutcomes]histogram
	examples [numOutcomes]atomic.Pointer[string]
	// retried counts requests sent again with the same key; inDoubt the
	// purchases whose outcome the retries did not learn.
	retried, inDoubt atomic.Int64
}

// Run sends the test's requests and returns its summary once every request
// was answered. It stops at the first of Duration, Requests, a sold-out sale
// (UntilSoldOut) and ctx's end; requests in flight then still get their
// answer (bounded by Timeout), so the audit can be exact.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	t, _ := parseTarget(cfg.URL, cfg.Host)
	if cfg.Scenario == Queue {
		return runQueue(ctx, cfg, t)
	}
	api := newAPIClient(t, cfg.TLS, cfg.Timeout)
	if cfg.Seats == 0 && (cfg.Scenario == SellOut || cfg.Scenario == Mixed || cfg.Scenario == HoldConfirm) {
		a, err := api.availability(ctx)
		if err != nil {
			return nil, &FieldError{Flag: "seats", Msg: "not given, and reading the sale's size failed: " + err.Error()}
		}
		if a.Tickets < 1 {
			return nil, &FieldError{Flag: "seats", Msg: fmt.Sprintf("not given, and %s/v1/availability reports %d tickets", t.base, a.Tickets)}
		}
		cfg.Seats = a.Tickets
	}
	e := &engine{
		ctx:    ctx,
		cfg:    cfg,
		t:      t,
		api:    api,
		build:  newRequestBuilder(t, runID(cfg.Keyless), cfg.Tokens),
		pick:   newPicker(cfg),
		open:   cfg.Rate > 0,
		stopCh: make(chan struct{}),
	}
	if cfg.Scenario == HoldConfirm {
		return runHolds(e)
	}
	if e.open {
		e.gapNs = float64(time.Second) / cfg.Rate
	}

	cpu0 := cpuTime()
	e.start = time.Now()
	if cfg.Duration > 0 && !e.open { // the open model's schedule ends by itself
		timer := time.AfterFunc(cfg.Duration, func() { e.halt(stopDuration) })
		defer timer.Stop()
	}
	defer context.AfterFunc(ctx, func() { e.halt(stopInterrupted) })()

	var helpers sync.WaitGroup
	helpersDone := make(chan struct{})
	if cfg.UntilSoldOut && cfg.Scenario != AnySeat {
		helpers.Go(func() { e.watchSoldOut(helpersDone) })
	}
	if cfg.Progress != nil {
		helpers.Go(func() { e.report(helpersDone) })
	}

	workers := make([]*worker, cfg.Concurrency)
	var wg sync.WaitGroup
	for i := range workers {
		w := &worker{e: e, rng: rand.New(rand.NewPCG(uint64(e.start.UnixNano()), uint64(i))),
			link: link{req: make([]byte, 0, 512), body: make([]byte, 0, 1024)}, timer: time.NewTimer(time.Hour)}
		w.timer.Stop()
		workers[i] = w
		wg.Go(w.run)
	}
	wg.Wait()
	elapsed := time.Since(e.start)
	cpu := cpuTime() - cpu0
	close(helpersDone)
	helpers.Wait()
	// Without a halt, the workers ran out of requests or of schedule.
	if cfg.Requests > 0 && e.seq.Load() >= cfg.Requests {
		e.halt(stopRequests)
	}
	e.halt(stopDuration)
	if cfg.Progress != nil {
		cfg.Progress(e.snapshot(true))
	}

	res := &Result{Summary: e.summary(elapsed, cpu)}
	var pending []pendingOrder
	for _, w := range workers {
		res.Created = append(res.Created, w.created...)
		pending = append(pending, w.pending...)
	}
	resolved, unknown := e.resolve(pending)
	res.Created = append(res.Created, resolved...)
	res.Summary.Retried, res.Summary.Resolved = e.retried.Load(), int64(len(resolved))
	res.Summary.InDoubt = e.inDoubt.Load() - int64(len(pending)) + unknown
	return res, nil
}

// runID names one test's Idempotency-Keys ("" when keyless).
func runID(keyless bool) string {
	if keyless {
		return ""
	}
	return strconv.FormatUint(rand.Uint64()>>16, 36)
}

// pendingOrder is an order a 503 named, and its buyer (whose token, with
// buyer identity, may look it up).
type pendingOrder struct {
	id    uuid.UUID
	buyer int64
}

// resolve asks GET /v1/orders/{id} for each order a 503 named and its
// retries did not settle, until the answer is final (not 503): the orders
// that exist, and how many stayed unknown.
func (e *engine) resolve(ids []pendingOrder) (found []Order, unknown int64) {
	ctx := context.WithoutCancel(e.ctx)
	for _, p := range ids {
		deadline := time.Now().Add(settleWait)
		for {
			o, status, err := e.api.order(ctx, p.id, e.cfg.Tokens.For(p.buyer))
			if err == nil && status == http.StatusOK {
				found = append(found, o)
				break
			}
			if err == nil && status == http.StatusNotFound {
				break
			}
			if time.Now().After(deadline) {
				unknown++
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return found, unknown
}

// halt stops new requests from being sent, waking workers that wait for
// their scheduled time; the first reason wins. Reaching Requests or the end
// of the open model's schedule is no halt: each worker stops on its own,
// after sending what it had already claimed.
func (e *engine) halt(reason string) {
	e.stopOnce.Do(func() {
		e.stopReason = reason
		e.stopped.Store(true)
		close(e.stopCh)
	})
}

// next claims the sequence number of the next request.
func (e *engine) next() (int64, bool) {
	if e.stopped.Load() {
		return 0, false
	}
	k := e.seq.Add(1) - 1
	if e.cfg.Requests > 0 && k >= e.cfg.Requests {
		return 0, false
	}
	return k, true
}

func (e *engine) snapshot(done bool) Snapshot {
	s := Snapshot{Elapsed: time.Since(e.start), Done: done}
	for o := range s.Counts {
		s.Counts[o] = e.stats[o].count()
		s.Total += s.Counts[o]
	}
	return s
}

func (e *engine) report(done <-chan struct{}) {
	tick := time.NewTicker(e.cfg.ProgressEvery)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			e.cfg.Progress(e.snapshot(false))
		case <-done:
			return
		}
	}
}

// watchSoldOut halts the test once the sale reports no seat available. Only
// any-seat learns it from its answers (409 sold_out); seat-picking buyers
// just see ticket_sold, so this asks.
func (e *engine) watchSoldOut(done <-chan struct{}) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			a, err := e.api.availability(e.ctx)
			// Sold, not only unavailable: held seats may come back.
			if err == nil && a.Tickets > 0 && a.Available == 0 && a.Sold >= a.Tickets {
				e.halt(stopSoldOut)
				return
			}
		case <-e.stopCh:
			return
		case <-done:
			return
		}
	}
}

// example keeps the first description of an unexpected outcome, so the
// summary can say what the 404s or transport errors were.
func (e *engine) example(o Outcome, status int, body []byte, err error) {
	if e.examples[o].Load() != nil {
		return
	}
	var s string
	switch {
	case err != nil:
		s = err.Error()
	case problemCode(body) != nil:
		s = fmt.Sprintf("%d %s", status, problemCode(body))
	default:
		s = fmt.Sprintf("%d %s", status, http.StatusText(status))
	}
	e.examples[o].CompareAndSwap(nil, &s)
}

type worker struct {
	e   *engine
	rng *rand.Rand
	link
	created []Order
	pending []pendingOrder // orders named by a 503 whose retries did not settle
	timer   *time.Timer
}

// Retries of a purchase in doubt: the waits double from retryFirst up to
// retryMax, maxRetries times, about as long as a pod takes to settle an
// order (checkout.SettleAfter: its 5 s bound, the server's check, the
// lock's life); settleWait bounds resolve's wait for one order. Variables
// so that tests can run them in milliseconds.
var (
	maxRetries = 12
	retryFirst = 50 * time.Millisecond
	retryMax   = 2 * time.Second
	settleWait = 20 * time.Second
)

func (w *worker) run() {
	e := w.e
	defer w.drop()
	for {
		k, ok := e.next()
		if !ok {
			return
		}
		start := time.Now()
		if e.open {
			at := time.Duration(float64(k) * e.gapNs)
			if e.cfg.Duration > 0 && at >= e.cfg.Duration {
				return
			}
			scheduled := e.start.Add(at)
			if wait := scheduled.Sub(start); wait > 0 {
				// On time: how late the runtime wakes us (up to ~1 ms when
				// idle) is the client's lateness, not the server's.
				if !w.sleep(wait) {
					return
				}
				start = time.Now()
			} else {
				// Late because every connection was busy waiting for the
				// server: that wait counts (coordinated omission).
				start = scheduled
			}
		}
		seat, buyer := e.pick.pick(k, w.rng)
		w.buy(k, seat, buyer, start)
	}
}

// sleep waits for d, or returns false when the test halts first.
func (w *worker) sleep(d time.Duration) bool {
	w.timer.Reset(d)
	select {
	case <-w.timer.C:
		return true
	case <-w.e.stopCh:
		w.timer.Stop()
		return false
	}
}

// buy makes purchase k: one request, and, unless keyless, the retries with
// its key while its outcome is in doubt. Every request is counted, each
// with its latency from its own start.
func (w *worker) buy(k, seat, buyer int64, start time.Time) {
	e := w.e
	var named uuid.UUID // the order a 503 named
	doubt := false
	wait := retryFirst
	for attempt := 0; ; attempt++ {
		o, status, body, ok := w.send(k, seat, buyer, start)
		if !ok {
			return
		}
		if e.build.keyHead == nil {
			return
		}
		switch {
		case o == TransportError || (o == ServerError && status >= 502 && status <= 504):
			doubt = true
			if id := problemOrderID(body); id != uuid.Nil {
				named = id
			}
		case o == TicketLocked && doubt:
			// Our own earlier attempt may still hold the seat's lock
			// while its commit runs: still in doubt.
		default:
			return // the outcome is known
		}
		if attempt == maxRetries || e.ctx.Err() != nil {
			e.inDoubt.Add(1)
			if named != uuid.Nil {
				w.pending = append(w.pending, pendingOrder{named, buyer})
			}
			return
		}
		if !sleepCtx(e.ctx, wait+time.Duration(w.rng.Int64N(int64(wait)))) {
			return
		}
		wait = min(2*wait, retryMax)
		e.retried.Add(1)
		start = time.Now()
	}
}

// send sends one request of purchase k and counts its answer; ok is false
// when an interrupt cut it short (not the server's doing).
func (w *worker) send(k, seat, buyer int64, start time.Time) (o Outcome, status int, body []byte, ok bool) {
	e := w.e
	w.req = e.build.appendRequest(w.req[:0], k, seat, buyer)
	status, body, err := w.roundTrip(e.ctx, e)
	latency := time.Since(start)
	if err != nil && e.ctx.Err() != nil {
		return 0, 0, nil, false
	}
	o = TransportError
	if err == nil {
		o = Classify(status, body)
	}
	e.stats[o].record(latency)
	switch o {
	case Created:
		w.created = append(w.created, decodeOrder(body))
		e.noteCreated()
	case SoldOut:
		if e.cfg.UntilSoldOut {
			e.halt(stopSoldOut)
		}
	case OtherAnswer, ServerError, TransportError:
		e.example(o, status, body, err)
	}
	return o, status, body, true
}

// noteCreated moves lastCreated to now if now is later.
func (e *engine) noteCreated() {
	at := int64(time.Since(e.start))
	for {
		last := e.lastCreated.Load()
		if at <= last || e.lastCreated.CompareAndSwap(last, at) {
			return
		}
	}
}

// pause waits d, or until the test stops (false); a buyer's think time or
// a server's Retry-After.
func (e *engine) pause(d time.Duration) bool {
	if d <= 0 {
		return !e.stopped.Load()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-e.stopCh:
		return false
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// problemOrderID is the orderId a 503 problem names (uuid.Nil if none).
func problemOrderID(body []byte) uuid.UUID {
	var p struct {
		OrderID uuid.UUID `json:"orderId"`
	}
	_ = json.Unmarshal(body, &p)
	return p.OrderID
}

// link is a worker's keep-alive connection, dialled when first needed and
// dropped after an error or an answer that closes it, with the worker's
// request and answer buffers.
type link struct {
	conn *h1conn
	req  []byte    // the next request, built in place
	body []byte    // the last answer's body, reused
	idle time.Time // when conn's last answer was read
}

// staleAfter is how long a connection may sit idle before roundTrip checks
// that the server has not closed it meanwhile (net/http's client learns
// that from its background read; h1conn has none): a hold-confirm buyer's
// think time, a slow open-model schedule. Busy connections skip the check.
const staleAfter = 100 * time.Millisecond

// roundTrip sends l.req and returns the answer's status and body (valid
// until the next call). ctx bounds only a dial.
func (l *link) roundTrip(ctx context.Context, e *engine) (int, []byte, error) {
	if l.conn != nil && time.Since(l.idle) >= staleAfter && !l.conn.idleAlive() {
		l.drop()
	}
	if l.conn == nil {
		c, err := dialH1(ctx, e.t, e.cfg.TLS, e.cfg.Timeout)
		if err != nil {
			return 0, nil, err
		}
		l.conn = c
		e.conns.Add(1)
	}
	status, body, keep, err := l.conn.roundTrip(l.req, time.Now().Add(e.cfg.Timeout), l.body)
	l.body = body[:0] // keep the grown buffer for the next answer
	if err != nil || !keep {
		l.drop()
	} else {
		l.idle = time.Now()
	}
	return status, body, err
}

func (l *link) drop() {
	if l.conn != nil {
		l.conn.close()
		l.conn = nil
	}
}

// decodeOrder reads a 201 body. Orders are few next to refusals, so plain
// JSON decoding is affordable here; an unreadable body gives a zero Order,
// which the audit reports.
func decodeOrder(body []byte) Order {
	var o Order
	if err := json.Unmarshal(body, &o); err != nil {
		return Order{}
	}
	return o
}
