package orderstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// The three group-commit statements of migration 00005 and the mapping of
// their rows (one per member, refusals included) to each member's answer.

// memberResult is one member's row: an outcome and what goes with it.
type memberResult struct {
	outcome string
	order   Order // purchases and hold confirmations
	hold    Hold  // holds
	detail  string
}

// collectMembers reads a batch statement's rows into one result per member
// (idx is 1-based); every member must have its row.
func collectMembers(rows pgx.Rows, n int, scan func(pgx.Rows, *memberResult) (int, error)) ([]memberResult, error) {
	defer rows.Close()
	out := make([]memberResult, n)
	got := 0
	for rows.Next() {
		var m memberResult
		idx, err := scan(rows, &m)
		if err != nil {
			return nil, err
		}
		if idx < 1 || idx > n || out[idx-1].outcome != "" {
			return nil, fmt.Errorf("member %d of %d answered twice or out of range", idx, n)
		}
		out[idx-1] = m
		got++
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if got != n {
		return nil, fmt.Errorf("%d of %d members answered", got, n)
	}
	return out, nil
}

// pgUUID is id as pgx's own UUID type: a []uuid.UUID parameter is encoded
// by reflection and each member's driver.Valuer (its text, parsed again),
// a []pgtype.UUID by the uuid codec (a tenth of the pod's CPU in a
// checkout of the in-process benchmark went to the former).
func pgUUID(id uuid.UUID) pgtype.UUID { return pgtype.UUID{Bytes: id, Valid: true} }

func purchaseConflicts(p Purchase) [2]string {
	k := [2]string{strconv.FormatInt(p.TicketID, 10)}
	if p.IdempotencyKey != "" {
		k[1] = "k\x00" + p.BuyerID + "\x00" + p.IdempotencyKey
	}
	return k
}

// purchaseSetting is what one confirm_purchases statement's members share.
func purchaseSetting(p Purchase) any { return p.MaxPerBuyer }

// confirmPurchases runs one statement: every member has one buyer limit
// (purchaseSetting).
func (s *Store) confirmPurchases(ctx context.Context, ps []Purchase) ([]memberResult, error) {
	return s.withOrderLocks(ctx, ps, purchaseStatement(ps))
}

// statement is one batch's SQL, its arguments, and how its answer is read
// (read closes rows, whose error, if any, is the statement's). locked is
// the same statement through its wrapper of migration 00014, which takes
// two more arguments: the advisory locks and the commit's cutoff.
type statement struct {
	sql, locked string
	args        []any
	read        func(pgx.Rows) ([]memberResult, error)
}

// purchaseStatement is confirm_purchases for ps, or confirm_purchase for
// one member (a batch of one pays no arrays).
func purchaseStatement(ps []Purchase) statement {
	if len(ps) == 1 {
		p := ps[0]
		var key *string
		if p.IdempotencyKey != "" {
			key = &p.IdempotencyKey
		}
		return statement{sql: `SELECT * FROM confirm_purchase($1, $2, $3, $4, $5)`,
			locked: `SELECT * FROM confirm_purchase_locked($1, $2, $3, $4, $5, $6, $7)`,
			args:   []any{p.TicketID, p.OrderID, p.BuyerID, key, p.MaxPerBuyer}, read: readOnePurchase}
	}
	tickets := make([]int64, len(ps))
	orders := make([]pgtype.UUID, len(ps))
	buyers := make([]string, len(ps))
	keys := make([]*string, len(ps))
	for i := range ps {
		tickets[i], orders[i], buyers[i] = ps[i].TicketID, pgUUID(ps[i].OrderID), ps[i].BuyerID
		if ps[i].IdempotencyKey != "" {
			keys[i] = &ps[i].IdempotencyKey
		}
	}
	n := len(ps)
	return statement{
		sql: `SELECT idx, outcome, order_id, ticket_id, buyer_id, purchased_at, detail
		FROM confirm_purchases($1, $2, $3, $4, $5)`,
		locked: `SELECT idx, outcome, order_id, ticket_id, buyer_id, purchased_at, detail
		FROM confirm_purchases_locked($1, $2, $3, $4, $5, $6, $7)`,
		args: []any{tickets, orders, buyers, keys, ps[0].MaxPerBuyer},
		read: func(rows pgx.Rows) ([]memberResult, error) {
			res, err := collectMembers(rows, n, scanOrderMember)
			if err != nil {
				return nil, fmt.Errorf("confirm %d purchases: %w", n, err)
			}
			return res, nil
		},
	}
}

// readOnePurchase reads confirm_purchase's answer; a refusal is its RAISE.
func readOnePurchase(rows pgx.Rows) ([]memberResult, error) {
	var m memberResult
	var replayed bool
	err := scanOne(rows, &replayed, &m.order.ID, &m.order.TicketID, &m.order.BuyerID, &m.order.PurchasedAt)
	if r, ok := oneRefusal(err); ok {
		return []memberResult{r}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("confirm a purchase: %w", err)
	}
	m.outcome = replayedOr(replayed)
	return []memberResult{m}, nil
}

// scanOne reads the one row of rows as QueryRow's Scan does: the
// statement's error, or pgx.ErrNoRows when there is no row.
func scanOne(rows pgx.Rows, dest ...any) error {
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := rows.Scan(dest...); err != nil {
		return err
	}
	rows.Close()
	return rows.Err()
}

// orderLockKey is the transaction-scoped advisory lock a keyed purchase's
// transaction holds on its (derived) order id from before its statement
// runs to its end (withOrderLocks), which KeyedPurchaseInFlight tests. A
// derived id is an HMAC: its 128 bits folded to 64 are as random.
func orderLockKey(id uuid.UUID) int64 {
	return int64(binary.BigEndian.Uint64(id[:8]) ^ binary.BigEndian.Uint64(id[8:]))
}

// CommitSkewMargin is how far ahead of PostgreSQL's clock a pod's may run
// without a keyed order ever committing after its buyer was answered 503
// (withOrderLocks): PostgreSQL refuses the commit from the statement's
// deadline less this margin, by its own clock. Clocks of one cluster
// (NTP) agree within milliseconds; the pod measures the offset at start
// (ClockOffset) and warns from half the margin.
const CommitSkewMargin = time.Second

// withOrderLocks runs st for ps. When a member has an idempotency key, st
// runs through its wrapper (statement.locked, migration 00014), one
// statement and so one implicit transaction: it takes the advisory lock of
// every keyed member's order id (orderLockKey), sorted, runs st, then
// commit_before (migration 00012), and the transaction commits only if
// that check passed, on PostgreSQL's clock, before ctx's deadline (the
// statement's, its members' earliest: from then on a member may have been
// answered 503 naming its order) less CommitSkewMargin; a commit that
// started in time may end after the deadline, its locks held until then.
// So a keyed order commits only while its lock is held, and a transaction
// that has not taken it yet never commits once its members were answered:
// GET /v1/orders/{id} of a derived id, which carries no time to settle by,
// asks the lock (KeyedPurchaseInFlight), and once it is free the order has
// committed or never will. No round trip and no statement more than st.
// (4d9e3e8 sent COMMIT from the pod once st's answer was back: a second
// round trip per batch. 00012 sent the locks, st and the check as three
// statements in one pipeline: 0.06 ms more for a lone buyer.) The locks
// come first in the global lock order of the batch functions (sorted; only
// these transactions take them), so they cannot deadlock: concurrent
// retries of one key, which share the id, wait here as they waited on the
// key's lock.
func (s *Store) withOrderLocks(ctx context.Context, ps []Purchase, st statement) ([]memberResult, error) {
	var keys []int64
	for _, p := range ps {
		if p.IdempotencyKey != "" {
			keys = append(keys, orderLockKey(p.OrderID))
		}
	}
	if len(keys) == 0 {
		rows, _ := s.pool.Query(ctx, st.sql, st.args...) // its error is rows'
		return st.read(rows)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(batchTimeout)
	}
	slices.Sort(keys)
	rows, _ := s.pool.Query(ctx, st.locked, append(st.args, keys, deadline.Add(-CommitSkewMargin))...) // its error is rows'
	res, err := st.read(rows)
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
	case errors.As(err, &pgErr):
		if pgErr.Code == "FO008" {
			return nil, fmt.Errorf("confirm %d purchases: %w (nothing committed): %w", len(ps), context.DeadlineExceeded, err)
		}
	case !pgconn.SafeToRetry(err) && ctx.Err() == nil:
		// The connection failed after the statement may have reached the
		// server, which may still run and commit it until its cutoff; its
		// members' 503s must not come before their deadline, after which
		// it no longer can (GET's 404 is then final).
		return nil, &answerAfter{at: deadline, err: err}
	}
	return res, err
}

// ClockOffset measures how far PostgreSQL's clock is ahead of this
// process's (negative: behind), give or take uncertainty (half the round
// trip). withOrderLocks relies on the pod's clock not running ahead by
// CommitSkewMargin or more.
func (s *Store) ClockOffset(ctx context.Context) (offset, uncertainty time.Duration, err error) {
	var best time.Duration = -1
	for range 3 { // the tightest of three round trips
		var pg time.Time
		t0 := time.Now()
		if err := s.pool.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&pg); err != nil {
			return 0, 0, fmt.Errorf("read PostgreSQL's clock: %w", err)
		}
		rtt := time.Since(t0)
		if best < 0 || rtt < best {
			best = rtt
			offset, uncertainty = pg.Sub(t0.Add(rtt/2)), rtt/2
		}
	}
	return offset, uncertainty, nil
}

// scanOrderMember reads a row of confirm_purchases.
func scanOrderMember(rows pgx.Rows, m *memberResult) (int, error) {
	var idx int
	var id uuid.NullUUID
	var ticket *int64
	var buyer, detail *string
	var at *time.Time
	if err := rows.Scan(&idx, &m.outcome, &id, &ticket, &buyer, &at, &detail); err != nil {
		return 0, err
	}
	m.order = Order{ID: id.UUID, TicketID: deref(ticket), BuyerID: deref(buyer), PurchasedAt: deref(at)}
	m.detail = deref(detail)
	return idx, nil
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// refusal is the error of a refused member (nil for ok and replayed).
func (m memberResult) refusal() error {
	switch m.outcome {
	case "ok", "replayed":
		return nil
	case "sold":
		owner, _ := uuid.Parse(m.detail)
		return &SoldError{OrderID: owner}
	case "limit":
		n, _ := strconv.Atoi(m.detail)
		return &LimitError{Orders: n}
	case "held":
		h := &HeldError{}
		if id, ms, ok := strings.Cut(m.detail, " "); ok {
			h.HoldID, _ = uuid.Parse(id)
			if v, err := strconv.ParseInt(ms, 10, 64); err == nil {
				h.Until = time.UnixMilli(v)
			}
		}
		return h
	case "nohold":
		return ErrHoldNotFound
	case "expired", "released":
		return ErrHoldExpired
	case "cancelled":
		// detail (purchases, one-order functions) or the row's order id
		// (confirm_holds) names the cancelled order.
		c := &CancelledError{OrderID: m.order.ID}
		if id, err := uuid.Parse(m.detail); err == nil {
			c.OrderID = id
		}
		return c
	}
	return fmt.Errorf("unknown outcome %q", m.outcome)
}

func holdConflicts(r HoldRequest) [2]string {
	return [2]string{strconv.FormatInt(r.TicketID, 10), "h\x00" + r.HoldID.String()}
}

type holdSetting struct {
	ttl time.Duration
	max int
}

// holdSettingOf is what one hold_seats statement's members share.
func holdSettingOf(r HoldRequest) any { return holdSetting{r.TTL, r.MaxPerBuyer} }

// holdSeats runs one statement: every member has one TTL and buyer limit
// (holdSettingOf).
func (s *Store) holdSeats(ctx context.Context, rs []HoldRequest) ([]memberResult, error) {
	if len(rs) == 1 {
		return s.holdOne(ctx, rs[0])
	}
	tickets := make([]int64, len(rs))
	holds := make([]pgtype.UUID, len(rs))
	buyers := make([]string, len(rs))
	for i, r := range rs {
		tickets[i], holds[i], buyers[i] = r.TicketID, pgUUID(r.HoldID), r.BuyerID
	}
	rows, err := s.pool.Query(ctx, `SELECT idx, outcome, hold_id, ticket_id, buyer_id, expires_at, detail
		FROM hold_seats($1, $2, $3, $4, $5)`, tickets, holds, buyers, rs[0].TTL.Milliseconds(), rs[0].MaxPerBuyer)
	if err != nil {
		return nil, fmt.Errorf("hold %d seats: %w", len(rs), err)
	}
	res, err := collectMembers(rows, len(rs), func(rows pgx.Rows, m *memberResult) (int, error) {
		var idx int
		var id uuid.NullUUID
		var ticket *int64
		var buyer, detail *string
		var until *time.Time
		if err := rows.Scan(&idx, &m.outcome, &id, &ticket, &buyer, &until, &detail); err != nil {
			return 0, err
		}
		m.hold = Hold{ID: id.UUID, TicketID: deref(ticket), BuyerID: deref(buyer), ExpiresAt: deref(until), State: HoldHeld}
		m.detail = deref(detail)
		return idx, nil
	})
	if err != nil {
		return nil, fmt.Errorf("hold %d seats: %w", len(rs), err)
	}
	return res, nil
}

// holdConfirm is one member of confirm_holds.
type holdConfirm struct {
	hold, order uuid.UUID
	buyer       string
	paymentRef  string
}

func confirmConflicts(c holdConfirm) [2]string { return [2]string{"h\x00" + c.hold.String()} }

func (s *Store) confirmHolds(ctx context.Context, cs []holdConfirm) ([]memberResult, error) {
	if len(cs) == 1 {
		return s.confirmHoldOne(ctx, cs[0])
	}
	holds := make([]pgtype.UUID, len(cs))
	buyers := make([]string, len(cs))
	orders := make([]pgtype.UUID, len(cs))
	refs := make([]string, len(cs))
	for i, c := range cs {
		holds[i], buyers[i], orders[i], refs[i] = pgUUID(c.hold), c.buyer, pgUUID(c.order), c.paymentRef
	}
	rows, err := s.pool.Query(ctx, `SELECT idx, outcome, order_id, ticket_id, buyer_id, purchased_at, hold_id, payment_ref
		FROM confirm_holds($1, $2, $3, $4)`, holds, buyers, orders, refs)
	if err != nil {
		return nil, fmt.Errorf("confirm %d holds: %w", len(cs), err)
	}
	res, err := collectMembers(rows, len(cs), func(rows pgx.Rows, m *memberResult) (int, error) {
		var idx int
		var id, hold uuid.NullUUID
		var ticket *int64
		var buyer, ref *string
		var at *time.Time
		if err := rows.Scan(&idx, &m.outcome, &id, &ticket, &buyer, &at, &hold, &ref); err != nil {
			return 0, err
		}
		m.order = Order{ID: id.UUID, TicketID: deref(ticket), BuyerID: deref(buyer), PurchasedAt: deref(at),
			HoldID: hold.UUID, PaymentRef: deref(ref)}
		return idx, nil
	})
	if err != nil {
		return nil, fmt.Errorf("confirm %d holds: %w", len(cs), err)
	}
	return res, nil
}

// A batch of one runs the one-order function of migration 00003: for one
// member it costs PostgreSQL about half the batch function's set-based
// steps, which a lone buyer would feel. Both take their locks in the same
// order. Its refusals are RAISEd (the SQLSTATEs of seatError), which for a
// batch of one undo nothing else.

// oneRefusal turns a one-order function's refusal into its member's row;
// ok is false for any other error.
func oneRefusal(err error) (memberResult, bool) {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return memberResult{}, false
	}
	outcome, ok := refusalCodes[pgErr.Code]
	if !ok {
		return memberResult{}, false
	}
	if pgErr.Code == "FO005" && pgErr.Detail == "released" {
		outcome = "released"
	}
	return memberResult{outcome: outcome, detail: pgErr.Detail}, true
}

// refusalCodes are the one-order functions' SQLSTATEs and the batch
// outcomes they match.
var refusalCodes = map[string]string{"FO001": "sold", "FO002": "limit", "FO003": "held", "FO004": "nohold", "FO005": "expired",
	"FO006": "cancelled"}

func replayedOr(replayed bool) string {
	if replayed {
		return "replayed"
	}
	return "ok"
}

func (s *Store) holdOne(ctx context.Context, r HoldRequest) ([]memberResult, error) {
	var m memberResult
	var replayed bool
	err := s.pool.QueryRow(ctx, `SELECT * FROM hold_seat($1, $2, $3, $4, $5)`,
		r.TicketID, r.HoldID, r.BuyerID, r.TTL.Milliseconds(), r.MaxPerBuyer).
		Scan(&replayed, &m.hold.ID, &m.hold.TicketID, &m.hold.BuyerID, &m.hold.ExpiresAt)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "holds_pkey" {
		// hold_seat takes no lock on the hold id: a concurrent retry of the
		// same keyed hold committed first, perhaps on another seat. This
		// attempt is its replay.
		h, herr := s.Hold(ctx, r.HoldID)
		if herr != nil {
			return nil, fmt.Errorf("hold a seat: replay hold %s: %w", r.HoldID, herr)
		}
		return []memberResult{{outcome: "replayed", hold: h}}, nil
	}
	if res, ok := oneRefusal(err); ok {
		return []memberResult{res}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("hold a seat: %w", err)
	}
	m.hold.State = HoldHeld
	m.outcome = replayedOr(replayed)
	return []memberResult{m}, nil
}

func (s *Store) confirmHoldOne(ctx context.Context, c holdConfirm) ([]memberResult, error) {
	var m memberResult
	var replayed bool
	var hold uuid.NullUUID
	var ref *string
	err := s.pool.QueryRow(ctx, `SELECT * FROM confirm_hold($1, $2, $3, $4)`, c.hold, c.buyer, c.order, c.paymentRef).
		Scan(&replayed, &m.order.ID, &m.order.TicketID, &m.order.BuyerID, &m.order.PurchasedAt, &hold, &ref)
	if r, ok := oneRefusal(err); ok {
		return []memberResult{r}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("confirm a hold: %w", err)
	}
	m.order.HoldID, m.order.PaymentRef = hold.UUID, deref(ref)
	m.outcome = replayedOr(replayed)
	return []memberResult{m}, nil
}
