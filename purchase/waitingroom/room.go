// Package waitingroom is the queue in front of a sale (issue 11,
// docs/waiting-room.md). Its truth is in Postgres (migration 00004): the
// queue table, one row per buyer with the seq they joined with, and the
// serving slot up to which buyers are admitted. Each pod
//   - writes joins in batches (joinLoop: one statement per few ms),
//   - keeps a view of the serving slot, the admission steps of the last
//     passTTL and the available seats, refreshed every queueRefreshInterval
//     (refreshLoop), so a poll and a pass check need no I/O,
//   - competes to be the one admitter (admitLoop), which moves the serving
//     slot at admitPerSecond, bounded by the inventory.
package waitingroom

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flux-order/flux-order/purchase/orderstore"
	"github.com/flux-order/flux-order/purchase/sale"
)

const (
	queueRefreshInterval = 200 * time.Millisecond // sold-out reaches waiting buyers within ~this
	admitTick            = 100 * time.Millisecond
	admitterRetry        = time.Second // how often a non-admitting pod tries for the role
	joinBatchWindow      = 5 * time.Millisecond
	joinBatchMax         = 512
	joinTimeout          = 5 * time.Second // a join batch's statement and commit
	// joinAnswerSlack is how much longer than its batch's joinTimeout a
	// member waits for the batch's answer: the member's clock starts
	// before the batch's (its window, a batch ahead of it), and a member
	// that gave up first would answer 503 for a join that then committed.
	joinAnswerSlack = time.Second
	queueDBTimeout  = 2 * time.Second
	// AdmitMultiple bounds admission by the inventory: active buyers (see
	// admitter.step) are kept at most AdmitMultiple × available seats. Above
	// 1 because some admitted buyers leave without buying; at 2 a buyer who
	// is let in still has at least an even chance at a seat.
	AdmitMultiple = 2
	// activeRecount is how often the admitter recounts the active buyers;
	// in between it only adds the ones it admits (over-counting is safe).
	activeRecount = time.Second
	// staleView: a pod whose view is older answers polls 503 rather than
	// tell a buyer a place it cannot vouch for.
	staleView          = 10 * time.Second
	maxStepsPerRefresh = 10_000
)

// Store is what the room needs of the sale's PostgreSQL (*orderstore.Store).
type Store interface {
	JoinQueue(ctx context.Context, buyers []string) (map[string]orderstore.Joined, error)
	QueueSnapshot(ctx context.Context, afterID int64, since time.Time, limit int) (orderstore.QueueState, []orderstore.Admission, error)
	TryAdmitter(ctx context.Context) (*orderstore.Admitter, error)
	Counts(ctx context.Context) (orderstore.Counts, error)
	LeaveQueue(ctx context.Context, buyer string, seq int64, passTTL time.Duration) (bool, error)
	QueueLeft(ctx context.Context, afterID int64, limit int) ([]orderstore.Left, error)
}

// Room is one pod's part of the sale's waiting room.
type Room struct {
	settings atomic.Pointer[Settings]
	signer   *Signer
	view     atomic.Pointer[queueView]
	joins    chan joinRequest
	store    Store
	schedule func() sale.Schedule
	metrics  *metrics
	log      *slog.Logger
	lastErr  atomic.Int64 // unix ns of the last logged error (one a second)
	left     leavers
	spender  atomic.Pointer[spenderBox]
	warm     atomic.Bool // latched by Warm
	// joinTimeout bounds a join batch (joinTimeout; shorter in tests).
	joinTimeout time.Duration
}

// queueView is a pod's picture of the queue, replaced whole by each refresh.
type queueView struct {
	at        time.Time
	state     orderstore.QueueState
	available int64                  // seats neither sold nor held
	held      int64                  // seats held at checkout: they may come back
	steps     []orderstore.Admission // of the last passTTL, oldest first
	lastStep  int64                  // id of the newest step read
}

type joinRequest struct {
	buyer string
	reply chan joinResult
}

type joinResult struct {
	joined orderstore.Joined
	err    error
}

// New returns the room of sale with settings wr (off while AdmitPerSecond
// is 0; Set changes them live). Its tokens are signed under a key derived
// from secret, its series are registered with reg, and Run starts its
// loops.
func New(saleName string, secret []byte, wr Settings, store Store, schedule func() sale.Schedule, reg prometheus.Registerer, log *slog.Logger) *Room {
	q := &Room{
		signer:      NewSigner(secret, saleName),
		joins:       make(chan joinRequest, 4*joinBatchMax),
		store:       store,
		schedule:    schedule,
		log:         log,
		joinTimeout: joinTimeout,
	}
	q.Set(wr)
	q.metrics = newMetrics(reg, q)
	return q
}

// Set changes the room's settings live (an AdmitPerSecond of 0 turns it
// off: everyone may buy without a pass).
func (q *Room) Set(wr Settings) {
	if wr.Order == "" {
		wr.Order = FIFO
	}
	q.settings.Store(&wr)
}

// Settings are the room's settings in force.
func (q *Room) Settings() Settings { return *q.settings.Load() }

// On says whether buyers queue first.
func (q *Room) On() bool { return q.settings.Load().On() }

// Signer signs and checks the room's queue ids and passes.
func (q *Room) Signer() *Signer { return q.signer }

// Run starts the pod's loops; they end with ctx, and wait returns once
// they have.
func (q *Room) Run(ctx context.Context) (wait func()) {
	var wg sync.WaitGroup
	wg.Go(func() { q.joinLoop(ctx) })
	wg.Go(func() { q.refreshLoop(ctx) })
	wg.Go(func() { q.admitLoop(ctx) })
	return wg.Wait
}

// logError logs at most one error a second: an outage fails every tick.
func (q *Room) logError(msg string, err error) {
	now := time.Now().UnixNano()
	last := q.lastErr.Load()
	if now-last >= int64(time.Second) && q.lastErr.CompareAndSwap(last, now) {
		q.log.Warn(msg, "err", err)
	}
}

// join enqueues the buyer (or finds their place) through the pod's batch.
func (q *Room) join(ctx context.Context, buyer string) (orderstore.Joined, error) {
	r := joinRequest{buyer: buyer, reply: make(chan joinResult, 1)}
	select {
	case q.joins <- r:
	case <-ctx.Done():
		return orderstore.Joined{}, sale.Unavailable(sale.ErrDatabaseUnavailable, ctx.Err())
	}
	select {
	case res := <-r.reply:
		if res.err != nil {
			return orderstore.Joined{}, sale.Unavailable(sale.ErrDatabaseUnavailable, res.err)
		}
		return res.joined, nil
	case <-ctx.Done():
		// The batch may still commit: a re-join finds the same place.
		return orderstore.Joined{}, sale.Unavailable(sale.ErrDatabaseUnavailable, ctx.Err())
	}
}

// joinLoop is the group commit of joins: the requests that arrive within
// joinBatchWindow of the first are written by one statement, and each is
// answered once it committed.
func (q *Room) joinLoop(ctx context.Context) {
	for {
		var batch []joinRequest
		select {
		case <-ctx.Done():
			return
		case r := <-q.joins:
			batch = append(batch, r)
		}
		window := time.NewTimer(joinBatchWindow)
	collect:
		for len(batch) < joinBatchMax {
			select {
			case r := <-q.joins:
				batch = append(batch, r)
			case <-window.C:
				break collect
			}
		}
		window.Stop()
		q.writeJoins(ctx, batch)
	}
}

func (q *Room) writeJoins(ctx context.Context, batch []joinRequest) {
	buyers := make([]string, 0, len(batch))
	seen := make(map[string]bool, len(batch))
	for _, r := range batch {
		if !seen[r.buyer] {
			seen[r.buyer] = true
			buyers = append(buyers, r.buyer)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, q.joinTimeout)
	defer cancel()
	got, err := q.store.JoinQueue(ctx, buyers)
	if err != nil {
		q.logError("queue join failed", err)
	}
	q.metrics.joinBatches.Observe(float64(len(buyers)))
	for _, r := range batch {
		r.reply <- joinResult{joined: got[r.buyer], err: err}
	}
}

func (q *Room) refreshLoop(ctx context.Context) {
	t := time.NewTicker(queueRefreshInterval)
	defer t.Stop()
	for {
		if q.settings.Load().On() {
			if err := q.refresh(ctx); err != nil && ctx.Err() == nil {
				q.logError("queue refresh failed", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// refresh reads the queue's state, the admission steps since the last
// refresh and the inventory, and publishes a new view.
func (q *Room) refresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, queueDBTimeout)
	defer cancel()
	now := time.Now()
	since := now.Add(-q.settings.Load().passTTL())
	old := q.view.Load()
	var after int64
	var steps []orderstore.Admission
	if old != nil {
		after = old.lastStep
		i := sort.Search(len(old.steps), func(i int) bool { return old.steps[i].At.After(since) })
		steps = append(steps, old.steps[i:]...)
	}
	// Read until caught up: the state is read before the steps of the
	// same call, so every slot up to its serving slot has its step loaded
	// (a poll never sees an admitted buyer without their admission time).
	var st orderstore.QueueState
	for {
		var fresh []orderstore.Admission
		var err error
		st, fresh, err = q.store.QueueSnapshot(ctx, after, since, maxStepsPerRefresh)
		if err != nil {
			return fmt.Errorf("read the queue: %w", err)
		}
		steps = append(steps, fresh...)
		if len(fresh) > 0 {
			after = fresh[len(fresh)-1].ID
		}
		if len(fresh) < maxStepsPerRefresh {
			break
		}
	}
	if err := q.left.load(ctx, q.store); err != nil {
		return err
	}
	c, err := q.store.Counts(ctx)
	if err != nil {
		return fmt.Errorf("count seats: %w", err)
	}
	q.view.Store(&queueView{at: now, state: st, available: c.Tickets - c.Sold - c.Held, held: c.Held, steps: steps, lastStep: after})
	return nil
}

// Counts are the room's numbers for status.waitingRoom.
type Counts struct {
	Waiting, Admitted, ServingPosition int64
}

// Counts are the numbers of the pod's view; false while the waiting room
// is off (or before the first view).
func (q *Room) Counts() (Counts, bool) {
	v := q.view.Load()
	if !q.settings.Load().On() || v == nil {
		return Counts{}, false
	}
	return Counts{Waiting: v.state.Waiting, Admitted: v.state.Admitted, ServingPosition: v.state.ServingSlot}, true
}

// Queue states a buyer sees.
const (
	StateWaiting  = "waiting"
	StateAdmitted = "admitted"
	StateSoldOut  = "sold_out"
	StateClosed   = "closed"
)

// Place is a buyer's standing, computed from the view alone.
type Place struct {
	State    string
	Position *int64 // nil: not known yet (a Random queue before its shuffle)
	Wait     *int64 // estimated seconds
	Pass     string
	Expires  time.Time
	Retry    int // Retry-After seconds
}

// slot is the buyer's place in admission order, or false before a Random
// queue's shuffle has placed them.
func (v *queueView) slot(t Ticket, wr Settings) (int64, bool) {
	if v.state.ShuffleSeed == nil && wr.Order == Random && v.state.ServingSlot == 0 {
		return 0, false // everyone so far will be shuffled at startsAt
	}
	return Slot(v.state, t.Seq), true
}

// admittedAt is when slot was admitted, if within the retained steps.
func (v *queueView) admittedAt(slot int64) (time.Time, bool) {
	i := sort.Search(len(v.steps), func(i int) bool { return v.steps[i].ServingSlot >= slot })
	if i == len(v.steps) || v.steps[i].FromSlot >= slot {
		return time.Time{}, false
	}
	return v.steps[i].At, true
}

// standing answers a poll: state, position, wait and, once admitted, the
// pass (the same one at every poll: its expiry is fixed by the admission).
func (q *Room) standing(v *queueView, t Ticket, now time.Time) Place {
	wr := *q.settings.Load()
	sch := q.schedule()
	if sch.Ended(now) {
		return Place{State: StateClosed, Retry: 60}
	}
	slot, known := v.slot(t, wr)
	if known && slot <= v.state.ServingSlot {
		at, ok := v.admittedAt(slot)
		expires := at.Add(wr.passTTL())
		if !ok || !now.Before(expires) {
			// This buyer's turn came and their pass expired.
			return Place{State: StateClosed, Retry: 60}
		}
		zero := int64(0)
		return Place{State: StateAdmitted, Position: &zero, Wait: &zero, Pass: q.signer.Pass(t.Buyer, expires),
			Expires: expires, Retry: clampSeconds(time.Until(expires), 1, 60)}
	}
	if v.available <= 0 {
		// Seats may come back (holds expiring): the buyer keeps their place.
		return Place{State: StateSoldOut, Retry: 5}
	}
	if !known {
		wait := int64(0)
		if sch.Before(now) {
			wait = int64(sch.UntilStart(now).Seconds()) + 1
		}
		return Place{State: StateWaiting, Wait: &wait, Retry: clampSeconds(time.Duration(wait)*time.Second/2, 1, 30)}
	}
	pos := slot - v.state.ServingSlot
	wait := (pos + int64(wr.AdmitPerSecond) - 1) / int64(wr.AdmitPerSecond)
	if sch.Before(now) {
		wait += int64(sch.UntilStart(now).Seconds()) + 1
	}
	return Place{State: StateWaiting, Position: &pos, Wait: &wait, Retry: clampSeconds(time.Duration(wait)*time.Second/2, 1, 30)}
}

func clampSeconds(d time.Duration, lo, hi int) int {
	return min(max(int(d/time.Second), lo), hi)
}

// admitter is the admitting pod's state; only the serving slot is durable.
type admitter struct {
	db        *orderstore.Admitter
	allowance float64 // admissions due, with the fractional carry
	last      time.Time
	active    int64
	activeAt  time.Time
	released  int64 // queue_state.released already taken off active
	relKnown  bool
	waitingAt time.Time
	shuffled  bool
}

func (q *Room) admitLoop(ctx context.Context) {
	var a *admitter
	var lastTry time.Time
	defer func() {
		if a != nil {
			a.db.Close()
		}
		q.metrics.admitting.Set(0)
		q.metrics.heldBack.Set(0)
	}()
	t := time.NewTicker(admitTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		wr := *q.settings.Load()
		if !wr.On() {
			if a != nil {
				a.db.Close()
				a = nil
				q.metrics.admitting.Set(0)
				q.metrics.heldBack.Set(0)
			}
			continue
		}
		now := time.Now()
		if a == nil {
			if now.Sub(lastTry) < admitterRetry {
				continue
			}
			lastTry = now
			actx, cancel := context.WithTimeout(ctx, queueDBTimeout)
			db, err := q.store.TryAdmitter(actx)
			cancel()
			if err != nil {
				if !errors.Is(err, orderstore.ErrNotAdmitter) {
					q.logError("could not compete for the queue's admitter role", err)
				}
				continue
			}
			q.log.Info("admitting buyers from the queue")
			a = &admitter{db: db, last: now}
			q.metrics.admitting.Set(1)
		}
		if err := q.step(ctx, a, wr, now); err != nil {
			if ctx.Err() == nil {
				q.logError("queue admission failed; giving up the admitter role", err)
			}
			a.db.Close()
			a = nil
			q.metrics.admitting.Set(0)
			q.metrics.heldBack.Set(0)
		}
	}
}

// step admits what is due at now: admitPerSecond since the last step (the
// fraction carried over), within the room the inventory leaves. Active
// buyers are those admitted less than passTTL ago (pass still valid) who
// have no ticket yet; room = AdmitMultiple × available − active, and at most
// maxActiveBuyers − active.
func (q *Room) step(ctx context.Context, a *admitter, wr Settings, now time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, queueDBTimeout)
	defer cancel()
	dt := now.Sub(a.last).Seconds()
	a.last = now
	if now.Sub(a.waitingAt) >= time.Second {
		if _, err := a.db.CountWaiting(ctx); err != nil {
			return fmt.Errorf("count waiting buyers: %w", err)
		}
		a.waitingAt = now
	}
	sch := q.schedule()
	if sch.Check(now) != nil {
		a.allowance = 0
		q.metrics.heldBack.Set(0)
		return nil
	}
	if wr.Order == Random && !a.shuffled {
		seed := make([]byte, 32)
		_, _ = rand.Read(seed) // never fails (crypto/rand)
		st, err := a.db.Shuffle(ctx, seed)
		if err != nil {
			return fmt.Errorf("shuffle the prequeue: %w", err)
		}
		if st.ShuffleSeed != nil && string(st.ShuffleSeed) == string(seed) {
			q.log.Info("shuffled the prequeue", "buyers up to seq", st.PrequeueSeq)
		}
		a.shuffled = true
	}
	rate := float64(wr.AdmitPerSecond)
	a.allowance = min(a.allowance+rate*dt, rate+1) // a stall of up to 1 s is caught up
	want := int64(a.allowance)
	if want < 1 {
		return nil
	}
	if now.Sub(a.activeAt) >= activeRecount {
		n, rel, err := a.db.CountActive(ctx, wr.passTTL())
		if err != nil {
			return fmt.Errorf("count active buyers: %w", err)
		}
		a.active, a.activeAt, a.released, a.relKnown = n, now, rel, true
	} else if a.relKnown {
		// Buyers who left the line free their place at once (LeaveQueue):
		// one read of a counter, not a recount.
		rel, err := a.db.Released(ctx)
		if err != nil {
			return fmt.Errorf("read released buyers: %w", err)
		}
		a.active = max(0, a.active-(rel-a.released))
		a.released = rel
	}
	c, err := q.store.Counts(ctx)
	if err != nil {
		return fmt.Errorf("count seats: %w", err)
	}
	room := AdmitMultiple*(c.Tickets-c.Sold-c.Held) - a.active
	if wr.MaxActiveBuyers > 0 {
		room = min(room, int64(wr.MaxActiveBuyers)-a.active)
	}
	n := min(want, room)
	// Holding back on purpose while buyers wait is not a stall (the
	// alert reads this).
	waiting := int64(0)
	if v := q.view.Load(); v != nil {
		waiting = v.state.Waiting
	}
	q.metrics.heldBack.Set(b2f(room < 1 && waiting > 0))
	var got int64
	if n >= 1 {
		if _, got, err = a.db.AdmitNext(ctx, n, ShuffledSeq); err != nil {
			return fmt.Errorf("admit %d buyers: %w", n, err)
		}
	}
	a.active += got
	a.allowance -= float64(got)
	if got < want {
		// Nobody left to admit, or no room: admissions are not banked.
		a.allowance = min(a.allowance, 1)
	}
	q.metrics.admittedHere.Add(float64(got))
	return nil
}

// View is the queue's state as the pod's view last read it; false before
// the first refresh.
func (q *Room) View() (orderstore.QueueState, bool) {
	v := q.view.Load()
	if v == nil {
		return orderstore.QueueState{}, false
	}
	return v.state, true
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
