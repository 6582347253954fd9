package orderstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Group commit (issue 18): a confirmation costs about one durable commit
// whether it writes one order or a hundred, so each pod sends the
// confirmations, holds and hold confirmations that wait at the same moment
// as one statement (confirm_purchases, hold_seats, confirm_holds: migration
// 00005). A batch leaves at once when no batch of its kind is in flight: a
// lone buyer waits for nobody. While one is, the members that arrive wait
// for it and leave together when it ends, as PostgreSQL's own group commit
// gathers the commits that arrive during a WAL flush; a further batch goes
// in flight beside it (up to Flushers) only once a full one (Max members)
// is waiting. On the 2-core machine, where PostgreSQL and the pod share
// the cores, fewer and fuller statements are what the sell-out needs (one
// batch in flight sold 100,000 seats at 11,100 orders/s against 8,770
// with four, docs/benchmarks.md); the further flushers keep a slow disk
// (a cloud volume's millisecond fsyncs) from capping a pod at Max members
// per commit. A batch that leaves while another is in flight may linger up
// to Window to fill; it always leaves when it holds Max members.
// A batch of one runs the one-order function of migration 00003 (cheaper
// for one member than the batch function's set-based steps).

// Batching configures the group commit of a Store.
type Batching struct {
	// Max is the most members one statement carries (1: no batching).
	Max int
	// Window is how long a batch that is not full may wait for more
	// members, and only while another batch of the pod is in flight: with
	// nothing in flight it leaves at once. 0: never wait.
	Window time.Duration
	// Flushers is how many purchase batches may be in flight at once, each
	// on its own connection, the second and later only while a full batch
	// waits; holds and hold confirmations get half each (checkout).
	Flushers int
}

// Defaults of Batching (the purchase command's --confirm-batch-* flags).
const (
	DefaultBatchMax      = 64
	DefaultBatchWindow   = 500 * time.Microsecond
	DefaultBatchFlushers = 4
	// MaxBatchWindow bounds Window: a batch is a commit on the buyer's
	// path, and every member waits for the slowest.
	MaxBatchWindow = 5 * time.Millisecond
	// MaxBatchMax bounds Max: each keyed member takes two advisory locks
	// (its order id's and its key's), which never take PostgreSQL's fast
	// path, and its shared lock table holds max_locks_per_transaction (64)
	// × max_connections (100) = 6,400 locks. At 128, a pod's flushers (4 ×
	// 256 locks) times the pods that fit in max_connections (6 × 16 pooled
	// connections) stay under it; at 256 they did not.
	MaxBatchMax = 128
	// batchTimeout bounds a batch whose members have no deadline.
	batchTimeout = 5 * time.Second
	// stallAfter: once the latest statement in flight has run this long
	// (a commit usually takes a millisecond or two), a member that arrives
	// starts another beside it if a flusher slot is free.
	stallAfter = 20 * time.Millisecond
	// minStatementTime: a member with less time left is not sent (it
	// could not be confirmed in time anyway), so that one late member
	// cannot cut the statement short for the whole batch.
	minStatementTime = 250 * time.Millisecond
)

// DefaultBatching is what a Store uses unless told otherwise.
func DefaultBatching() Batching {
	return Batching{Max: DefaultBatchMax, Window: DefaultBatchWindow, Flushers: DefaultBatchFlushers}
}

// Validate says which setting is out of range.
func (b Batching) Validate() error {
	switch {
	case b.Max < 1 || b.Max > MaxBatchMax:
		return fmt.Errorf("batch max must be in 1..%d, got %d", MaxBatchMax, b.Max)
	case b.Window < 0 || b.Window > MaxBatchWindow:
		return fmt.Errorf("batch window must be in 0..%s, got %s", MaxBatchWindow, b.Window)
	case b.Flushers < 1 || b.Flushers > 64:
		return fmt.Errorf("batch flushers must be in 1..64, got %d", b.Flushers)
	}
	return nil
}

// checkout is the setting of the holds' and the hold confirmations'
// batchers: half the flushers each (at least one). A checkout sends both
// kinds at once (each buyer holds, then confirms), so with Flushers each
// a checkout sale had twice the statements of a sell-out in flight, each
// batch half as full: PostgreSQL's CPU per member grows fast as batches
// shrink (the set-based steps cost per statement), and on the 2-core
// machine that, not the commit, was the checkout's limit (docs/purchase.md,
// "Group commit"). A lone buyer still leads its own batch at once.
func (b Batching) checkout() Batching {
	b.Flushers = max(1, (b.Flushers+1)/2)
	return b
}

// errBatchStopped answers the members still queued when the store closes.
var errBatchStopped = errors.New("the store is closing")

// call is one member waiting for its batch.
type call[Req, Res any] struct {
	req      Req
	deadline time.Time
	queued   time.Time
	done     chan outcome[Res]
}

type outcome[Res any] struct {
	res Res
	err error
}

// batcher groups the calls of one kind into statements. flush runs one
// statement for reqs and returns one result per request, in order; an
// error fails every member of that statement (its outcome is then unknown
// to them).
// conflicts names what two members of one statement may not share (a
// seat, an idempotency key, a hold): a member that shares one with an
// earlier member waits for the next batch, where it sees the first one's
// outcome as if it had come after it.
//
// There are no flusher goroutines to hand a member to: the caller that
// finds a flusher slot free runs the statement itself, for every member
// waiting then, so a lone buyer pays no hand-off between goroutines. It
// runs no batch but its own member's, and a goroutine takes its slot over
// if members are still waiting.
type batcher[Req, Res any] struct {
	cfg       Batching
	flush     func(ctx context.Context, reqs []Req) ([]Res, error)
	conflicts func(Req) [2]string
	// setting, if set, is what one statement's members must share (a
	// comparable value): a batch of several runs one statement each.
	setting func(Req) any
	// minTime is the least time a member needs left to be sent
	// (minStatementTime unless set).
	minTime time.Duration
	metrics *batchSeries

	mu      sync.Mutex
	pending []*call[Req, Res]
	busy    int           // flusher slots taken
	newest  time.Time     // when the latest statement started
	arrived chan struct{} // a member arrived (for a lingering flusher)
	closed  bool
	wg      sync.WaitGroup // flushers running
}

func newBatcher[Req, Res any](cfg Batching, m *batchSeries, conflicts func(Req) [2]string,
	flush func(ctx context.Context, reqs []Req) ([]Res, error)) *batcher[Req, Res] {
	return &batcher[Req, Res]{cfg: cfg, flush: flush, conflicts: conflicts, metrics: m, arrived: make(chan struct{}, 1)}
}

// do sends req with the next batch and waits for its result. If ctx ends
// first the batch may still commit: the caller treats the outcome as
// unknown.
func (b *batcher[Req, Res]) do(ctx context.Context, req Req) (Res, error) {
	var zero Res
	c := &call[Req, Res]{req: req, queued: time.Now(), done: make(chan outcome[Res], 1)}
	c.deadline, _ = ctx.Deadline()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return zero, errBatchStopped
	}
	b.pending = append(b.pending, c)
	lead := b.busy == 0 || (b.busy < b.cfg.Flushers && b.overflowing())
	if lead {
		b.busy++
		b.wg.Add(1)
		if b.busy == 1 {
			// Its statement starts now: the last one's start, perhaps long
			// ago, must not count as a stuck statement (overflowing).
			b.newest = c.queued
		}
	}
	b.mu.Unlock()
	select {
	case b.arrived <- struct{}{}:
	default:
	}
	if lead {
		b.lead(c)
	}
	select {
	case o := <-c.done:
		return o.res, o.err
	case <-ctx.Done():
		// Both may be ready (select picks at random): an answer that is
		// there wins, so a committed order is not reported as unknown.
		select {
		case o := <-c.done:
			return o.res, o.err
		default:
		}
		return zero, ctx.Err()
	}
}

// lead runs, in the caller's goroutine, at most the one batch that holds
// c, so the caller is kept no longer than its own statement. A batch
// without c (c shares a seat or key with an earlier member, or the batch is
// full) goes to a goroutine with the slot, which then drains the queue; c
// is in that queue or in another flusher's batch, and the caller just
// waits for its answer. Otherwise, once c's batch is sent (or another
// flusher took c), the slot goes to a goroutine if members still wait, or
// is given back. Both are decided under the lock a new member takes to see
// whether a slot is free, so no member waits without one.
func (b *batcher[Req, Res]) lead(c *call[Req, Res]) {
	batch, mine := b.take(c)
	if len(batch) > 0 && !mine {
		go func() {
			b.send(batch)
			b.drain()
		}()
		return
	}
	if mine {
		b.send(batch)
	} // else the queue was empty: another flusher took c
	b.mu.Lock()
	if len(b.pending) > 0 {
		b.mu.Unlock()
		go b.drain()
		return
	}
	b.busy--
	b.mu.Unlock()
	b.wg.Done()
}

// overflowing says whether the statements in flight need another beside
// them (b.mu held): a full batch waits, or the latest statement has run for
// stallAfter (one stuck on a row lock or a dead connection must not keep
// every buyer of the pod waiting while slots are free).
func (b *batcher[Req, Res]) overflowing() bool {
	return len(b.pending) >= b.cfg.Max || time.Since(b.newest) > stallAfter
}

// drain runs batches until nobody waits, or until the other flushers can
// take the waiting members next (not overflowing), then gives the slot
// back.
func (b *batcher[Req, Res]) drain() {
	for {
		b.mu.Lock()
		if len(b.pending) == 0 || (b.busy > 1 && !b.overflowing()) {
			b.busy--
			b.mu.Unlock()
			b.wg.Done()
			return
		}
		b.mu.Unlock()
		if batch, _ := b.take(nil); len(batch) > 0 {
			b.send(batch)
		}
	}
}

// take removes the next batch from the queue: the waiting members in
// order, up to Max, without two that conflict (those wait for the next
// batch); then, while another batch is in flight, whatever arrives within
// the window. mine says whether c is in it; a batch without c does not
// linger (c's caller is waiting to hand it over).
func (b *batcher[Req, Res]) take(c *call[Req, Res]) (batch []*call[Req, Res], mine bool) {
	b.mu.Lock()
	// Sized for the members waiting now, not for Max: a map of 2×Max
	// entries made for every batch (most are small) was the purchase
	// path's largest allocation.
	seen := make(map[string]bool, 2*min(len(b.pending), b.cfg.Max))
	batch = b.pick(batch, seen)
	// c joins at the first pick or not at all: later picks only add
	// members that conflict with none in the batch, and c did.
	for _, m := range batch {
		if m == c {
			mine = true
		}
	}
	linger := len(batch) > 0 && len(batch) < b.cfg.Max && b.cfg.Window > 0 && b.busy > 1 && (c == nil || mine)
	b.mu.Unlock()
	if linger {
		window := time.NewTimer(b.cfg.Window)
		defer window.Stop()
	wait:
		for len(batch) < b.cfg.Max {
			select {
			case <-b.arrived:
				b.mu.Lock()
				batch = b.pick(batch, seen)
				b.mu.Unlock()
			case <-window.C:
				break wait
			}
		}
	}
	return batch, mine
}

// pick moves waiting members into batch (b.mu held).
func (b *batcher[Req, Res]) pick(batch []*call[Req, Res], seen map[string]bool) []*call[Req, Res] {
	rest := b.pending[:0]
	for _, m := range b.pending {
		if len(batch) >= b.cfg.Max || b.conflict(m, seen) {
			rest = append(rest, m)
			continue
		}
		batch = append(batch, m)
	}
	clear(b.pending[len(rest):])
	b.pending = rest
	return batch
}

// conflict says whether m shares a seat, key or hold with a member already
// in the batch (seen), and otherwise marks m's.
func (b *batcher[Req, Res]) conflict(m *call[Req, Res], seen map[string]bool) bool {
	keys := b.conflicts(m.req)
	for _, k := range keys {
		if k != "" && seen[k] {
			return true
		}
	}
	for _, k := range keys {
		if k != "" {
			seen[k] = true
		}
	}
	return false
}

// close waits for the batches in flight; members still queued are
// answered errBatchStopped.
func (b *batcher[Req, Res]) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.wg.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.pending {
		c.done <- outcome[Res]{err: errBatchStopped}
	}
	b.pending = nil
}

// send runs batch's statements and answers each member. A statement
// carries one setting (b.setting: the buyer limit, a hold's TTL, which may
// change live), so a batch of several runs one statement per setting, one
// after another in the order of their first members, each its own
// transaction: its members are answered as soon as it returns, with its
// own result or error, whatever the others' do.
func (b *batcher[Req, Res]) send(batch []*call[Req, Res]) {
	for len(batch) > 0 {
		if b.setting == nil {
			b.statement(batch)
			return
		}
		// The members of the first one's setting, in order; the rest keep
		// theirs, at the end of batch (which is this flusher's own).
		first := b.setting(batch[0].req)
		var same, rest []*call[Req, Res]
		for _, c := range batch {
			if b.setting(c.req) == first {
				same = append(same, c)
			} else {
				rest = append(rest, c)
			}
		}
		b.statement(same)
		batch = rest
	}
}

// statement runs one statement for batch and answers each member. Members
// whose caller has gone are still sent: their lock is taken and their
// buyer may learn the outcome from GET /v1/orders/{id}; the statement's
// deadline is the earliest member's, so no commit of it can appear after a
// member's own bound (its settle time holds). A member with less than
// minTime left is answered at once and not sent.
func (b *batcher[Req, Res]) statement(batch []*call[Req, Res]) {
	now := time.Now()
	deadline := now.Add(batchTimeout)
	minTime := cmp.Or(b.minTime, minStatementTime)
	live := batch[:0]
	for _, c := range batch {
		if !c.deadline.IsZero() && c.deadline.Sub(now) < minTime {
			c.done <- outcome[Res]{err: context.DeadlineExceeded} // never sent: no order
			continue
		}
		live = append(live, c)
		if !c.deadline.IsZero() && c.deadline.Before(deadline) {
			deadline = c.deadline
		}
		b.metrics.wait.Observe(now.Sub(c.queued).Seconds())
	}
	batch = live
	if len(batch) == 0 {
		return
	}
	reqs := make([]Req, len(batch))
	for i, c := range batch {
		reqs[i] = c.req
	}
	b.metrics.size.Observe(float64(len(batch)))
	b.mu.Lock()
	b.newest = now
	b.mu.Unlock()
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	res, err := b.flush(ctx, reqs)
	b.metrics.commit.Observe(time.Since(now).Seconds())
	if err == nil && len(res) != len(batch) {
		err = fmt.Errorf("a batch of %d answered %d results", len(batch), len(res))
	}
	var later *answerAfter
	if errors.As(err, &later) {
		// Its members are answered at their own deadlines (their callers
		// stop waiting then) or at later.at, whichever comes first; the
		// flusher goes on with the next batch meanwhile.
		time.AfterFunc(time.Until(later.at), func() {
			for _, c := range batch {
				c.done <- outcome[Res]{err: err}
			}
		})
		return
	}
	for i, c := range batch {
		if err != nil {
			c.done <- outcome[Res]{err: err}
			continue
		}
		c.done <- outcome[Res]{res: res[i]}
	}
}

// answerAfter is a statement's error that its members must not be told
// before at: until then the statement may still commit on the server.
type answerAfter struct {
	at  time.Time
	err error
}

func (e *answerAfter) Error() string { return e.err.Error() }
func (e *answerAfter) Unwrap() error { return e.err }

// batchSeries are one kind's batch metrics, resolved once.
type batchSeries struct {
	size, wait, commit prometheus.Observer
}

// batchMetrics are the store's group-commit series, labelled by kind
// (purchase, hold, confirm_hold).
type batchMetrics struct {
	size, wait, commit *prometheus.HistogramVec
}

func newBatchMetrics() *batchMetrics {
	return &batchMetrics{
		size: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flux_order_confirm_batch_size",
			Help:    "Members (purchases, holds or hold confirmations) per group-commit statement, by kind.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}, []string{"kind"}),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flux_order_confirm_batch_wait_seconds",
			Help:    "Time a member waited in the pod before its batch was sent, by kind.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .1},
		}, []string{"kind"}),
		commit: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flux_order_confirm_commit_seconds",
			Help:    "Duration of one group-commit statement, durable commit included, by kind.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1, 5},
		}, []string{"kind"}),
	}
}

func (m *batchMetrics) series(kind string) *batchSeries {
	return &batchSeries{size: m.size.WithLabelValues(kind), wait: m.wait.WithLabelValues(kind), commit: m.commit.WithLabelValues(kind)}
}

func (m *batchMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.size, m.wait, m.commit}
}
