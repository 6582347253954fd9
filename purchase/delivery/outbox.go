package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/flux-order/flux-order/purchase/orderstore"
)

// The outbox (migration *_outbox_cursor.sql, docs/delivery.md): an event
// is the row of its fact (an order, a cancellation, a sale moment), which
// carries the xid8 of the transaction that wrote it; the view
// webhook_events lists them all. The pods fan them out in (xid, src, key)
// order behind one cursor, reading only below pg_snapshot_xmin of the
// reading statement's own snapshot: every transaction below it has ended,
// so no event can appear behind the cursor later, whatever order
// transactions commit in.

// fanOutBatch is how many events one fan-out batch takes, and
// fanOutLoops how many batches a pod has in flight at most.
const (
	fanOutBatch = 500
	fanOutLoops = 4
)

// idleFallback × PollInterval is how long a loop waiting for the pod's
// poller waits at most before it polls itself.
const idleFallback = 30

// cursor is the fan-out's position: the events after (xid, src, key) that
// are not visible in after (the switch's last OFF → ON) are pending.
type cursor struct {
	xid     string // xid8 as text
	src     int
	key     string
	nextSeq int64
	after   *string // pg_snapshot as text; nil: no snapshot to skip
}

// fanOut turns the events of the outbox into one delivery per webhook that
// wants each, in batches of up to fanOutBatch: it makes the first attempt
// of each delivery to a webhook this pod has not seen failing (Workers at
// once) and hands the failed ones, and every delivery to a failing
// webhook, to River; then it records the batch. Each batch is a claim
// (the cursor moves past it when it is claimed), so fanOutLoops batches
// per pod, from every pod, are in flight at once: a slow endpoint's round
// trips overlap. A pod that dies mid-batch leaves its claim's lease to
// expire and another pod fans the batch out again (a receiver may get an
// event twice, with the same webhook-id and sequence). Loops poll only
// while this pod's file lists a webhook and the switch is on (a pod that
// lists one keeps it on): a loop that found events polls again at once
// after a full batch, else after PollInterval; while polls find nothing,
// one loop of the pod polls (every PollInterval, one short statement: see
// anyWork) and the others wait until a poll of this pod claims events.
// An idle pod costs its database about ten statements a second, not the
// four loops' six round trips each every PollInterval, and events wait no
// longer: the poll that finds them wakes the other loops at once.
//
// Why the first attempt is not a River job: a job per delivery costs
// PostgreSQL an insert, the fetch's update and the completion's update
// (each re-indexing River's GIN index on args, body included), and the pod
// River's fetch, decoding and completion; and River's fetch cadence capped
// delivery below the sale's rate (lag p99 4 s). Here it is the HTTP request
// and a share of one counter update per batch.
func (d *Deliverer) fanOut(ctx context.Context) {
	idle := true // this loop's last poll found nothing
	for {
		if d.draining.Load() {
			return // the pod is stopping: no new batch (Drain)
		}
		if len(d.settings.Load().hooks) == 0 || !d.switchOn.Load() {
			select {
			case <-ctx.Done():
				return
			case <-time.After(d.cfg.PollInterval):
			}
			continue
		}
		if ctx.Err() != nil {
			return // no new batch once the pod stops (fanOutOnce outlives ctx)
		}
		// Taken before the poll, so a claim made meanwhile by another
		// loop is not missed.
		woken := d.idle.waiter()
		n, err := d.fanOutOnce(ctx, idle)
		if err != nil && ctx.Err() == nil {
			d.log.Warn("fan the events out", "err", err)
		}
		idle = n == 0
		if n == fanOutBatch {
			continue
		}
		poller := idle && d.idle.poller.CompareAndSwap(false, true)
		if idle && !poller {
			// Another loop of this pod polls for the idle ones. The
			// timer is a safety net only (a poller stuck on its
			// database): then this loop polls itself, rarely.
			select {
			case <-ctx.Done():
				return
			case <-woken:
			case <-time.After(idleFallback * d.cfg.PollInterval):
			}
			continue
		}
		select {
		case <-ctx.Done():
		case <-time.After(d.cfg.PollInterval):
		}
		if poller {
			d.idle.poller.Store(false)
		}
	}
}

// idlePoll is how a pod's fan-out loops share the polling while the
// outbox is idle.
type idlePoll struct {
	// poller: one loop of the pod polls for the loops whose polls found
	// nothing; the others wait for wake.
	poller atomic.Bool
	mu     sync.Mutex
	wake   chan struct{} // closed when a poll of this pod claims events
	// cursor is the outbox's cursor as this pod last read it or moved it
	// (nil: not yet): anyWork's starting point.
	cursor atomic.Pointer[cursor]
}

// waiter is closed by the next wakeAll.
func (p *idlePoll) waiter() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.wake == nil {
		p.wake = make(chan struct{})
	}
	return p.wake
}

// wakeAll wakes the loops that wait: there is work.
func (p *idlePoll) wakeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.wake != nil {
		close(p.wake)
		p.wake = nil
	}
}

// anyWork says, in one statement and without a transaction, whether a
// claim could find anything: a claim whose lease ended, or a settled event
// after the cursor as this pod last saw it. Never no when there is: the
// cursor only moves forward (a claim, or the switch's reset to a later
// snapshot, which skips only events committed before it), so an event
// pending after the real cursor is after the remembered one too. An
// event another pod claimed since makes it answer yes until this pod's
// next claim reads the cursor again.
func (d *Deliverer) anyWork(ctx context.Context) (bool, error) {
	c := d.idle.cursor.Load()
	if c == nil {
		return true, nil
	}
	q, args := pendingSQL(*c, nil, 1)
	var yes bool
	err := d.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM webhook_claims WHERE leased_until < clock_timestamp())
		OR EXISTS (`+q+`)`, args...).Scan(&yes)
	return yes, err
}

// leaseFor is how long a fan-out batch may hold its claim: its attempts
// start within one AttemptTimeout (the rest are deferred to River, as are
// an endpoint's once it fails) and each ends within another, then the
// batch is recorded (recordTimeout).
func (d *Deliverer) leaseFor() time.Duration { return 3*d.cfg.AttemptTimeout + 2*recordTimeout }

// recordTimeout bounds the statement that records a batch, and the one
// that gives its lease back, each on a context of its own: a batch whose
// attempts ran long still records what they got.
const recordTimeout = 10 * time.Second

// errLeaseLost: the batch outlived its claim's lease and another pod
// took the claim over; that pod fans the batch out again.
var errLeaseLost = errors.New("the fan-out's claim expired: another pod fans this batch out again")

// batch is a claimed range of the outbox: the events after from, first
// numbered firstSeq.
type batch struct {
	claim    int64
	token    string // leased_by: this claim's, not only this pod's
	from     cursor
	firstSeq int64
	events   []EventArgs
}

// fanOutOnce claims a batch and fans it out; with check (the loop's last
// poll found nothing) it first asks anyWork, one statement, instead of
// the claim's transaction.
func (d *Deliverer) fanOutOnce(parent context.Context, check bool) (n int, err error) {
	if check {
		// Bounded (a connection to a black hole would otherwise hold
		// the pod's poller for the kernel's retransmissions), and
		// cancelled when the pod stops.
		pctx, cancel := context.WithTimeout(parent, recordTimeout)
		more, err := d.anyWork(pctx)
		cancel()
		if err != nil || !more {
			return 0, err
		}
	}
	// A batch runs to its end when the pod stops (bounded): stopped
	// halfway, its deliveries would be made again by another pod.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), d.leaseFor())
	defer cancel()
	b, err := d.claimExpired(ctx)
	if err == nil && b == nil {
		b, err = d.claimNext(ctx)
	}
	if err != nil || b == nil {
		return 0, err
	}
	d.idle.wakeAll() // work: the pod's waiting loops poll too

	hooks := d.settings.Load().hooks
	var inline []*attempt
	var params []river.InsertManyParams
	for i, e := range b.events {
		e.Seq = b.firstSeq + int64(i)
		body, err := json.Marshal(Body{Type: e.Type, Timestamp: e.At.UTC(), Sequence: e.Seq, Data: e.Data})
		if err != nil {
			return 0, d.releaseClaim(ctx, b, err)
		}
		for name, h := range hooks {
			if !h.wants(e.Type) {
				continue
			}
			a := DeliveryArgs{Webhook: name, ID: e.ID, Type: e.Type, At: e.At, Body: string(body)}
			if d.inlineFor(name, h) {
				inline = append(inline, &attempt{hook: h, args: a})
			} else {
				params = append(params, d.deliveryJob(a))
			}
		}
	}
	// A slow endpoint (2xx, but late) must not run the batch past its
	// lease: attempts not started within one AttemptTimeout go to River.
	delivered, failed, deferred := d.attemptInline(ctx, inline, time.Now().Add(d.cfg.AttemptTimeout))
	for _, a := range deferred {
		params = append(params, d.deliveryJob(a.args))
	}
	ctx, cancelRecord := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancelRecord()
	err = pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM webhook_claims WHERE id = $1 AND leased_by = $2`, b.claim, b.token)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return errLeaseLost
		}
		if len(params) > 0 {
			if _, err := d.client.InsertManyTx(ctx, tx, params); err != nil {
				return err
			}
		}
		if err := d.countDelivered(ctx, tx, delivered); err != nil {
			return err
		}
		return d.insertFailed(ctx, tx, failed)
	})
	if err != nil {
		return 0, d.releaseClaim(ctx, b, err)
	}
	return len(b.events), nil
}

// claimNext claims the next events after the cursor: read-only while
// nothing is pending, then one statement that moves the cursor past them
// (only if it is still where it was read: else another fan-out claimed
// them first) and records the claim, leased to this pod.
func (d *Deliverer) claimNext(ctx context.Context) (b *batch, err error) {
	// One of this pod's loops at a time waits for the database's lock:
	// the others wait here, without holding a pool connection.
	d.claimMu.Lock()
	defer d.claimMu.Unlock()
	var at cursor
	err = pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		b, at, err = d.claimNextTx(ctx, tx)
		return err
	})
	if err == nil {
		d.idle.cursor.Store(&at) // committed: anyWork's start (never ahead of the cursor)
	}
	return b, err
}

// claimNextTx answers the batch it claimed (nil: none) and the cursor as
// it leaves it.
func (d *Deliverer) claimNextTx(ctx context.Context, tx pgx.Tx) (*batch, cursor, error) {
	// One claim at a time in the sale's database: a loop that waits here
	// reads after the claim before its own, instead of reading the same
	// events and losing the race for them (an advisory lock: no xid, no
	// write while nothing is pending).
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(`+claimLock+`)`); err != nil {
		return nil, cursor{}, err
	}
	var c cursor
	err := tx.QueryRow(ctx, `SELECT xid::text, src, key, next_seq, after::text FROM webhook_cursor`).
		Scan(&c.xid, &c.src, &c.key, &c.nextSeq, &c.after)
	if err != nil {
		return nil, c, err
	}
	events, last, err := d.pendingEvents(ctx, tx, c, nil, fanOutBatch)
	if err != nil || len(events) == 0 {
		return nil, c, err
	}
	b := &batch{from: c, firstSeq: c.nextSeq, events: events, token: d.client.ID() + "/" + uuid.NewString()}
	err = tx.QueryRow(ctx, `WITH moved AS (
			UPDATE webhook_cursor SET xid = $6::xid8, src = $7, key = $8, next_seq = next_seq + $9
			WHERE xid = $1::xid8 AND src = $2 AND key = $3 AND next_seq = $4 AND after::text IS NOT DISTINCT FROM $5
			RETURNING 1)
		INSERT INTO webhook_claims (from_xid, from_src, from_key, to_xid, to_src, to_key, after, first_seq, n, leased_by, leased_until)
			SELECT $1::xid8, $2, $3, $6::xid8, $7, $8, $5::pg_snapshot, $4, $9, $10, clock_timestamp() + make_interval(secs => $11) FROM moved
		RETURNING id`,
		c.xid, c.src, c.key, c.nextSeq, c.after, last.xid, last.src, last.key, len(events), b.token, d.leaseFor().Seconds()).Scan(&b.claim)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, c, nil // claimed by another fan-out first (not under the lock: a pod of another version)
	}
	if err != nil {
		return nil, c, err
	}
	last.nextSeq += int64(len(events))
	return b, last, nil
}

// claimExpired takes over a claim whose pod did not record it within its
// lease (killed, node lost, or its record failed): the same events with
// the same numbers, read again between the claim's start and end (they
// are below the xmin of the read that claimed them, so they have not
// changed: a cancellation moves an order's event to its cancellation row
// at the same place; the bounds make it exact whatever moves).
func (d *Deliverer) claimExpired(ctx context.Context) (*batch, error) {
	b := &batch{token: d.client.ID() + "/" + uuid.NewString()}
	var n int
	var to cursor
	err := d.pool.QueryRow(ctx, `UPDATE webhook_claims SET leased_by = $1, leased_until = clock_timestamp() + make_interval(secs => $2)
		WHERE id = (SELECT id FROM webhook_claims WHERE leased_until < clock_timestamp() ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
		RETURNING id, from_xid::text, from_src, from_key, to_xid::text, to_src, to_key, after::text, first_seq, n`, b.token, d.leaseFor().Seconds()).
		Scan(&b.claim, &b.from.xid, &b.from.src, &b.from.key, &to.xid, &to.src, &to.key, &b.from.after, &b.firstSeq, &n)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if b.events, _, err = d.pendingEvents(ctx, d.pool, b.from, &to, n); err != nil {
		return nil, d.releaseClaim(ctx, b, err)
	}
	if len(b.events) != n {
		d.log.Warn("a claimed batch of the outbox reads differently", "claim", b.claim, "events", n, "read", len(b.events))
	}
	d.log.Info("a fan-out batch whose pod did not record it is fanned out again", "claim", b.claim, "events", len(b.events))
	return b, nil
}

// releaseClaim hands a batch that did not record back at once (its lease
// ends now: the next claimExpired, here or on another pod, fans it out
// again), and answers err.
func (d *Deliverer) releaseClaim(ctx context.Context, b *batch, err error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if _, rerr := d.pool.Exec(ctx, `UPDATE webhook_claims SET leased_until = clock_timestamp() WHERE id = $1 AND leased_by = $2`,
		b.claim, b.token); rerr != nil {
		d.log.Warn("release the fan-out's claim", "err", rerr)
	}
	return err
}

// pendingEvents reads up to limit events after c, in order, and the
// position of the last one. Each source is read on its own (xid, key)
// index, at most limit rows and only those rendered, then the sources are
// merged: the view webhook_events, sorted on its text key, would build and
// sort every pending event for each batch (measured: about 5 µs an event,
// which after an outage of the fan-out is the whole backlog per batch).
func (d *Deliverer) pendingEvents(ctx context.Context, q querier, c cursor, to *cursor, limit int) ([]EventArgs, cursor, error) {
	query, args := pendingSQL(c, to, limit)
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, c, err
	}
	defer rows.Close()
	var events []EventArgs
	last := c
	for rows.Next() {
		var e EventArgs
		var o orderstore.Cancellation
		var holdID *uuid.UUID
		var paymentRef, cancelledBy, reason *string
		var cancelledAt *time.Time
		if err := rows.Scan(&last.xid, &last.src, &last.key, &e.Type, &e.At, &o.OrderID, &o.TicketID, &o.BuyerID, &o.PurchasedAt,
			&holdID, &paymentRef, &cancelledAt, &cancelledBy, &reason, &e.Data); err != nil {
			return nil, c, err
		}
		// The order's fields as the purchase API answers them (times in
		// UTC), built here rather than decoded from a jsonb: rendering
		// is on the fan-out's path of every event.
		if holdID != nil {
			o.HoldID = *holdID
		}
		if paymentRef != nil {
			o.PaymentRef = *paymentRef
		}
		o.PurchasedAt = o.PurchasedAt.UTC()
		var data any
		switch last.src {
		case srcConfirmed:
			e.ID = o.OrderID.String()
			data = orderstore.Order{ID: o.OrderID, TicketID: o.TicketID, BuyerID: o.BuyerID, PurchasedAt: o.PurchasedAt, HoldID: o.HoldID, PaymentRef: o.PaymentRef}
		case srcCancelled:
			e.ID = "order.cancelled:" + o.OrderID.String()
			o.CancelledAt, o.CancelledBy, o.Reason = cancelledAt.UTC(), *cancelledBy, *reason
			data = o
		default:
			e.ID = e.Type + ":" + d.cfg.Sale
		}
		if data != nil {
			raw, err := json.Marshal(data)
			if err != nil {
				return nil, c, err
			}
			e.Data = raw
		}
		events = append(events, e)
	}
	return events, last, rows.Err()
}

// claimLock is the advisory lock under which claims are made, and the
// switch's trigger resets the cursor (the two-key form: its key space is
// not the one-key form's, which the confirming functions use per buyer).
// The same expression is in migration *_outbox_cursor.sql.
const claimLock = `1718384760, hashtext(current_schema() || '/webhook_claims')`

// querier is a pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// webhook_events.src of each kind of event.
const (
	srcConfirmed = 1
	srcCancelled = 2
	srcSale      = 3
)

// pendingSQL reads the events after from (up to and including to, when
// given: a claim's range) that have settled, below the statement
// snapshot's xmin, in order: the query and its arguments.
func pendingSQL(from cursor, to *cursor, limit int) (string, []any) {
	p := &sqlParams{}
	snap, lim := p.add(from.after, "pg_snapshot"), p.add(limit, "int")
	bounds := rangeBounds(p, from, to)
	settled := func(xid string) string {
		return xid + ` < (SELECT pg_snapshot_xmin(pg_current_snapshot()))
			AND (` + snap + ` IS NULL OR NOT pg_visible_in_snapshot(` + xid + `, ` + snap + `))`
	}
	const orderCols = `ticket_id, buyer_id, purchased_at, hold_id, payment_ref`
	// The outer ORDER BY names u's columns: x::text is an output column
	// too, and an unqualified x would sort on its text.
	return `SELECT u.x::text AS xid_text, u.src, u.k, u.type, u.at, u.order_id, u.ticket_id, u.buyer_id, u.purchased_at,
			u.hold_id, u.payment_ref, u.cancelled_at, u.cancelled_by, u.reason, u.data
		FROM (
		(SELECT o.event_xid AS x, 1 AS src, o.id::text AS k, 'order.confirmed' AS type, o.purchased_at AS at, o.id AS order_id, ` + orderCols + `,
				NULL::timestamptz AS cancelled_at, NULL::text AS cancelled_by, NULL::text AS reason, NULL::jsonb AS data
			FROM orders o WHERE ` + bounds(srcConfirmed, "o.event_xid", "o.id", "uuid") + ` AND ` + settled("o.event_xid") + `
			ORDER BY o.event_xid, o.id LIMIT ` + lim + `)
		UNION ALL
		(SELECT c.confirmed_xid, 1, c.order_id::text, 'order.confirmed', c.purchased_at, c.order_id, ` + orderCols + `, NULL, NULL, NULL, NULL
			FROM order_cancellations c
			WHERE ` + bounds(srcConfirmed, "c.confirmed_xid", "c.order_id", "uuid") + ` AND ` + settled("c.confirmed_xid") + `
			ORDER BY c.confirmed_xid, c.order_id LIMIT ` + lim + `)
		UNION ALL
		(SELECT c.cancel_xid, 2, c.order_id::text, 'order.cancelled', c.cancelled_at, c.order_id, ` + orderCols + `,
				c.cancelled_at, c.cancelled_by, c.reason, NULL
			FROM order_cancellations c
			WHERE ` + bounds(srcCancelled, "c.cancel_xid", "c.order_id", "uuid") + ` AND ` + settled("c.cancel_xid") + `
			ORDER BY c.cancel_xid, c.order_id LIMIT ` + lim + `)
		UNION ALL
		(SELECT s.xid, 3, s.type, s.type, coalesce(s.at, s.made_at), '00000000-0000-0000-0000-000000000000'::uuid, 0, '', coalesce(s.at, s.made_at),
				NULL, NULL, NULL, NULL, NULL, s.data
			FROM webhook_sale_events s
			WHERE ` + bounds(srcSale, "s.xid", `s.type COLLATE "C"`, "text") + ` AND ` + settled("s.xid") + ` AND s.data IS NOT NULL
			ORDER BY s.xid, s.type COLLATE "C" LIMIT ` + lim + `)
	) u ORDER BY u.x, u.src, u.k COLLATE "C" LIMIT ` + lim, p.args
}

// sqlParams numbers a statement's parameters as they are added.
type sqlParams struct{ args []any }

func (p *sqlParams) add(v any, typ string) string {
	p.args = append(p.args, v)
	return `$` + strconv.Itoa(len(p.args)) + `::` + typ
}

// rangeBounds is, for each source of the outbox, the condition on its
// (xid, key) index that keeps its events after from and not after to (nil:
// no end). Each source compares its own typed columns, so the index is
// entered at the bound itself, not at the start of the bound's
// transaction (a view's text key would make PostgreSQL read every event of
// the first and last transactions, all of a large one).
func rangeBounds(p *sqlParams, from cursor, to *cursor) func(src int, xid, key, keyType string) string {
	fromXid := p.add(from.xid, "xid8")
	var fromKey, toXid, toKey string
	if from.src >= srcConfirmed && from.src <= srcSale {
		fromKey = p.add(from.key, "text") // only a source at the cursor compares keys
	}
	if to != nil {
		toXid, toKey = p.add(to.xid, "xid8"), p.add(to.key, "text")
	}
	return func(src int, xid, key, keyType string) string {
		var w string
		switch {
		case from.src < src:
			w = xid + ` >= ` + fromXid
		case from.src == src:
			// The scalar bound also proves xid NOT NULL, the partial
			// index's predicate, which a row comparison does not.
			w = xid + ` >= ` + fromXid + ` AND (` + xid + `, ` + key + `) > (` + fromXid + `, ` + fromKey + `::` + keyType + `)`
		default:
			w = xid + ` > ` + fromXid
		}
		if to == nil {
			return w
		}
		switch {
		case src < to.src:
			return w + ` AND ` + xid + ` <= ` + toXid
		case src == to.src:
			return w + ` AND (` + xid + `, ` + key + `) <= (` + toXid + `, ` + toKey + `::` + keyType + `)`
		default:
			return w + ` AND ` + xid + ` < ` + toXid
		}
	}
}

// countDelivered adds the deliveries the fan-out made itself to each
// webhook's count (status.delivery's delivered, with River's completed
// retries): one row per webhook and batch, not one per delivery.
func (d *Deliverer) countDelivered(ctx context.Context, tx pgx.Tx, as []*attempt) error {
	if len(as) == 0 {
		return nil
	}
	by := map[string]int64{}
	for _, a := range as {
		by[a.args.Webhook]++
	}
	names := make([]string, 0, len(by))
	counts := make([]int64, 0, len(by))
	for name, n := range by {
		names, counts = append(names, name), append(counts, n)
	}
	_, err := tx.Exec(ctx, `INSERT INTO webhook_delivered AS w (webhook, delivered)
		SELECT * FROM unnest($1::text[], $2::bigint[])
		ON CONFLICT (webhook) DO UPDATE SET delivered = w.delivered + excluded.delivered`, names, counts)
	return err
}

// countSQL counts the events after from (up to and including to, a
// claim's end, when given) by type, with the oldest one's time: settled or
// not (an event of a transaction that committed is pending even while an
// older one still runs), and not visible in from.after (they happened
// before the switch's last OFF → ON). Each source is counted on its own
// (xid, key) index with typed bounds (rangeBounds), as pendingSQL reads
// them: a claim's range reads its own events, also inside one large
// transaction. Sale rows without data (a previous version's, converted
// later) are not counted yet.
func countSQL(from cursor, to *cursor) (string, []any) {
	p := &sqlParams{}
	snap := p.add(from.after, "pg_snapshot")
	bounds := rangeBounds(p, from, to)
	after := func(xid string) string {
		return `(` + snap + ` IS NULL OR NOT pg_visible_in_snapshot(` + xid + `, ` + snap + `))`
	}
	return `SELECT type, sum(n)::bigint, min(at) FROM (
		SELECT 'order.confirmed' AS type, count(*) AS n, min(o.purchased_at) AS at FROM orders o
			WHERE ` + bounds(srcConfirmed, "o.event_xid", "o.id", "uuid") + ` AND ` + after("o.event_xid") + `
		UNION ALL
		SELECT 'order.confirmed', count(*), min(c.purchased_at) FROM order_cancellations c
			WHERE ` + bounds(srcConfirmed, "c.confirmed_xid", "c.order_id", "uuid") + ` AND ` + after("c.confirmed_xid") + `
		UNION ALL
		SELECT 'order.cancelled', count(*), min(c.cancelled_at) FROM order_cancellations c
			WHERE ` + bounds(srcCancelled, "c.cancel_xid", "c.order_id", "uuid") + ` AND ` + after("c.cancel_xid") + `
		UNION ALL
		SELECT s.type, count(*), min(s.at) FROM webhook_sale_events s
			WHERE ` + bounds(srcSale, "s.xid", `s.type COLLATE "C"`, "text") + ` AND ` + after("s.xid") + ` AND s.data IS NOT NULL
			GROUP BY s.type
	) u WHERE n > 0 GROUP BY type`, p.args
}

type pendingCount struct {
	n      int64
	oldest time.Time
}

// convertLegacyEvents makes the events still waiting in river_job (the
// outbox before the cursor) events of the cursor once no pod of that
// version is left to fan them out: a row still available after 30 s
// (those pods poll every 100 ms). They are the sale events such a pod
// recorded during a rolling upgrade (a webhook_sale_events row without
// data, and its event in river_job), and events the migration left to a
// pod that was fanning them out and then died. SKIP LOCKED leaves the ones
// a pod is fanning out right now to it.
func (d *Deliverer) convertLegacyEvents(ctx context.Context) {
	// Order events too: the migration skipped those an old pod was
	// fanning out, and that pod's batch may have rolled back since (it
	// died), leaving them available with nobody to send them.
	_, err := d.pool.Exec(ctx, `WITH j AS (
			DELETE FROM river_job WHERE id IN (
				SELECT id FROM river_job WHERE kind = $1 AND state = 'available' AND created_at < now() - interval '30 seconds'
				FOR UPDATE SKIP LOCKED)
			RETURNING args),
		o AS (UPDATE orders o SET event_xid = pg_current_xact_id()
			FROM j WHERE j.args->>'type' = 'order.confirmed' AND o.id::text = j.args->>'id' RETURNING 1),
		c AS (UPDATE order_cancellations c SET confirmed_xid = pg_current_xact_id()
			FROM j WHERE j.args->>'type' = 'order.confirmed' AND c.order_id::text = j.args->>'id' RETURNING 1),
		x AS (UPDATE order_cancellations c SET cancel_xid = pg_current_xact_id()
			FROM j WHERE j.args->>'type' = 'order.cancelled' AND j.args->>'id' = 'order.cancelled:' || c.order_id::text RETURNING 1)
		UPDATE webhook_sale_events s SET xid = pg_current_xact_id(), at = (j.args->>'at')::timestamptz, data = j.args->'data'
			FROM j WHERE j.args->>'type' = s.type AND s.data IS NULL`, KindEvent)
	if err != nil && ctx.Err() == nil {
		d.log.Warn("convert the previous version's event rows", "err", err)
	}
}
