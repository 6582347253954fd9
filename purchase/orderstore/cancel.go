package orderstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Order cancellation (migration 00009): a cancelled order leaves orders for
// order_cancellations in one transaction that frees its seat, gives the
// buyer's count back and writes the order.cancelled event.

// ErrOrderCancelled means the order (or the order an idempotency key or a
// hold made) was cancelled: it is in order_cancellations, not in orders.
var ErrOrderCancelled = errors.New("order cancelled")

// CancelledError is ErrOrderCancelled naming the order.
type CancelledError struct {
	OrderID uuid.UUID
	// BuyerID is set when the cancellation was read (Order, OrderByKey),
	// so that the caller can check who may learn of it.
	BuyerID string
}

func (e *CancelledError) Error() string { return ErrOrderCancelled.Error() + ": " + e.OrderID.String() }

// Is makes errors.Is(err, ErrOrderCancelled) true.
func (e *CancelledError) Is(target error) bool { return target == ErrOrderCancelled }

// Cancellation is a cancelled order as the admin API answers it and the
// audit table keeps it: the order's fields, then who cancelled it, when and
// why.
type Cancellation struct {
	Seq         int64     `json:"-"` // the audit row's id: the pods' cursor
	OrderID     uuid.UUID `json:"orderId"`
	TicketID    int64     `json:"ticketId"`
	BuyerID     string    `json:"buyerId"`
	PurchasedAt time.Time `json:"purchasedAt"`
	HoldID      uuid.UUID `json:"holdId,omitzero"`
	PaymentRef  string    `json:"paymentRef,omitempty"`
	CancelledAt time.Time `json:"cancelledAt"`
	CancelledBy string    `json:"cancelledBy"`
	Reason      string    `json:"reason"`
}

// CancelOrder cancels order id (cancel_order). first is true for the call
// that cancelled it; a repeat changes nothing and answers the first
// cancellation. ErrNotFound when there is no such order, live or cancelled.
func (s *Store) CancelOrder(ctx context.Context, id uuid.UUID, by, reason string) (c Cancellation, first bool, err error) {
	defer s.errs.Deferred("cancel_order", &err)
	var hold uuid.NullUUID
	var ref *string
	err = s.pool.QueryRow(ctx, `SELECT * FROM cancel_order($1, $2, $3)`, id, by, reason).Scan(&first,
		&c.OrderID, &c.TicketID, &c.BuyerID, &c.PurchasedAt, &hold, &ref, &c.CancelledAt, &c.CancelledBy, &c.Reason)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "FO007" {
		return Cancellation{}, false, ErrNotFound
	}
	if err != nil {
		return Cancellation{}, false, fmt.Errorf("cancel order %s: %w", id, err)
	}
	c.HoldID, c.PaymentRef = hold.UUID, deref(ref)
	return c, first, nil
}

const cancellationColumns = `id, order_id, ticket_id, buyer_id, purchased_at, hold_id, coalesce(payment_ref, ''),
	cancelled_at, cancelled_by, reason`

func scanCancellation(row pgx.Row) (Cancellation, error) {
	var c Cancellation
	var hold uuid.NullUUID
	err := row.Scan(&c.Seq, &c.OrderID, &c.TicketID, &c.BuyerID, &c.PurchasedAt, &hold, &c.PaymentRef,
		&c.CancelledAt, &c.CancelledBy, &c.Reason)
	c.HoldID = hold.UUID
	return c, err
}

// Cancellation reads the cancellation of order id (ErrNotFound if none).
func (s *Store) Cancellation(ctx context.Context, id uuid.UUID) (_ Cancellation, err error) {
	defer s.errs.Deferred("cancellation", &err)
	c, err := scanCancellation(s.pool.QueryRow(ctx, `SELECT `+cancellationColumns+` FROM order_cancellations WHERE order_id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Cancellation{}, ErrNotFound
	}
	if err != nil {
		return Cancellation{}, fmt.Errorf("read the cancellation of order %s: %w", id, err)
	}
	return c, nil
}

// RecentCancellations returns the cancellations after cursor (an audit row
// id) and every one made within the last window, oldest first, and the
// highest id among them (cursor when none). Ids are taken when a
// cancellation's statement runs, not when it commits, so a slow one can
// commit below a cursor already passed: the window finds it again, and
// lets the caller re-apply recent ones (a stale "sold" mark written after a
// cancel is undone the next time).
//
// A negative cursor starts a follower: only the window's cancellations, and
// next is the highest id so far (a pod that starts need not re-apply the
// sale's whole history).
func (s *Store) RecentCancellations(ctx context.Context, cursor int64, window time.Duration) (_ []Cancellation, next int64, err error) {
	defer s.errs.Deferred("recent_cancellations", &err)
	if cursor < 0 {
		if err := s.pool.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM order_cancellations`).Scan(&cursor); err != nil {
			return nil, -1, fmt.Errorf("read the last cancellation: %w", err)
		}
	}
	rows, err := s.pool.Query(ctx, `SELECT `+cancellationColumns+` FROM order_cancellations
		WHERE id > $1 OR cancelled_at > clock_timestamp() - $2::bigint * interval '1 millisecond' ORDER BY id`,
		cursor, window.Milliseconds())
	if err != nil {
		return nil, cursor, fmt.Errorf("read recent cancellations: %w", err)
	}
	defer rows.Close()
	var out []Cancellation
	next = cursor
	for rows.Next() {
		c, err := scanCancellation(rows)
		if err != nil {
			return nil, cursor, fmt.Errorf("read recent cancellations: %w", err)
		}
		out = append(out, c)
		next = max(next, c.Seq)
	}
	if err := rows.Err(); err != nil {
		return nil, cursor, fmt.Errorf("read recent cancellations: %w", err)
	}
	return out, next, nil
}

// CancelledCount is the number of cancelled orders (status.cancelled).
func (s *Store) CancelledCount(ctx context.Context) (n int64, err error) {
	defer s.errs.Deferred("cancelled_count", &err)
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM order_cancellations`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count cancelled orders: %w", err)
	}
	return n, nil
}
