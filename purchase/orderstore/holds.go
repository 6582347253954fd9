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

// Seat holds (migration 00003): a hold keeps a seat for one buyer until its
// expiry; confirming it makes the order, releasing it frees the seat.

var (
	// ErrTicketHeld means a live hold of another buyer keeps the seat.
	ErrTicketHeld = errors.New("ticket held")
	// ErrHoldNotFound means no such hold, or not the given buyer's.
	ErrHoldNotFound = errors.New("no such hold")
	// ErrHoldExpired means the hold expired, or was released, before it was
	// confirmed.
	ErrHoldExpired = errors.New("hold expired")
)

// HeldError is ErrTicketHeld naming the live hold and its expiry, so the
// caller can put the seat's Redis marker back without another query.
// HoldID is uuid.Nil when the hold ended meanwhile.
type HeldError struct {
	HoldID uuid.UUID
	Until  time.Time
}

func (e *HeldError) Error() string { return ErrTicketHeld.Error() }

// Is makes errors.Is(err, ErrTicketHeld) true.
func (e *HeldError) Is(target error) bool { return target == ErrTicketHeld }

// LimitError is ErrBuyerLimit with the buyer's orders, not counting holds:
// a buyer at the limit through holds may be below it again once one ends.
type LimitError struct{ Orders int }

func (e *LimitError) Error() string { return ErrBuyerLimit.Error() }

// Is makes errors.Is(err, ErrBuyerLimit) true.
func (e *LimitError) Is(target error) bool { return target == ErrBuyerLimit }

// HoldState is a hold's life: held, then confirmed, released or expired.
type HoldState string

// Hold states. Expired is not stored: it is a held hold past ExpiresAt.
const (
	HoldHeld      HoldState = "held"
	HoldConfirmed HoldState = "confirmed"
	HoldReleased  HoldState = "released"
	HoldExpired   HoldState = "expired"
)

// Hold is one buyer's hold on one seat.
type Hold struct {
	ID        uuid.UUID
	TicketID  int64
	BuyerID   string
	ExpiresAt time.Time
	State     HoldState
	OrderID   uuid.UUID // the order a confirmed hold became
}

// HoldRequest is what PlaceHold writes.
type HoldRequest struct {
	TicketID    int64
	HoldID      uuid.UUID
	BuyerID     string
	TTL         time.Duration // from the database's clock
	MaxPerBuyer int           // 0: unlimited; orders and live holds count
}

// seatError maps the one-order functions' SQLSTATEs (migration 00003) to
// the refusals of the batch outcomes they match; nil for others.
func seatError(e *pgconn.PgError) error {
	if m, ok := oneRefusal(e); ok {
		return m.refusal()
	}
	return nil
}

// seatRefusal is the refusal err carries (seatError), or nil when err is
// another failure, for the caller to wrap.
func seatRefusal(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return seatError(pgErr)
	}
	return nil
}

// PlaceHold holds r.TicketID for r.BuyerID with the pod's next group
// commit (hold_seats). replayed is true when r.HoldID existed already (a
// retry, perhaps of another seat). Refusals: *SoldError, *HeldError,
// *LimitError. Any other error leaves the outcome unknown.
func (s *Store) PlaceHold(ctx context.Context, r HoldRequest) (h Hold, replayed bool, err error) {
	defer s.errs.Deferred("place_hold", &err)
	m, err := s.holds.do(ctx, r)
	if err != nil {
		return Hold{}, false, fmt.Errorf("hold ticket %d: %w", r.TicketID, err)
	}
	if err := m.refusal(); err != nil {
		return Hold{}, false, err
	}
	if m.outcome == "replayed" {
		// The row's state may have moved on since (released, expired,
		// confirmed): the caller reads it when it matters.
		m.hold.State = HoldHeld
	}
	return m.hold, m.outcome == "replayed", nil
}

// ConfirmHold turns the buyer's live hold into order orderID with a
// payment reference, with the pod's next group commit (confirm_holds). A
// repeat answers the same order, replayed. Refusals: ErrHoldNotFound (no
// such hold, or another buyer's), ErrHoldExpired (expired or released).
func (s *Store) ConfirmHold(ctx context.Context, holdID uuid.UUID, buyerID string, orderID uuid.UUID, paymentRef string) (o Order, replayed bool, err error) {
	defer s.errs.Deferred("confirm_hold", &err)
	m, err := s.confirms.do(ctx, holdConfirm{hold: holdID, buyer: buyerID, order: orderID, paymentRef: paymentRef})
	if err != nil {
		return Order{}, false, fmt.Errorf("confirm hold %s: %w", holdID, err)
	}
	if err := m.refusal(); err != nil {
		return Order{}, false, err
	}
	return m.order, m.outcome == "replayed", nil
}

// ReleaseHold frees a live hold's seat at once (release_hold). released is
// false when the hold was already released, expired or confirmed: the call
// is idempotent. ErrHoldNotFound when there is no such hold.
func (s *Store) ReleaseHold(ctx context.Context, holdID uuid.UUID) (ticket int64, released bool, err error) {
	defer s.errs.Deferred("release_hold", &err)
	err = s.pool.QueryRow(ctx, `SELECT * FROM release_hold($1)`, holdID).Scan(&released, &ticket)
	if err != nil {
		if serr := seatRefusal(err); serr != nil {
			return 0, false, serr
		}
		return 0, false, fmt.Errorf("release hold %s: %w", holdID, err)
	}
	return ticket, released, nil
}

// Hold returns a hold with its state as of now (ErrHoldNotFound if none).
func (s *Store) Hold(ctx context.Context, holdID uuid.UUID) (_ Hold, err error) {
	defer s.errs.Deferred("hold", &err)
	var h Hold
	var order uuid.NullUUID
	err = s.pool.QueryRow(ctx, `SELECT id, ticket_id, buyer_id, expires_at,
			CASE WHEN state = 'held' AND expires_at <= clock_timestamp() THEN 'expired' ELSE state END, order_id
		FROM holds WHERE id = $1`, holdID).
		Scan(&h.ID, &h.TicketID, &h.BuyerID, &h.ExpiresAt, &h.State, &order)
	if errors.Is(err, pgx.ErrNoRows) {
		return Hold{}, ErrHoldNotFound
	}
	if err != nil {
		return Hold{}, fmt.Errorf("read hold %s: %w", holdID, err)
	}
	h.OrderID = order.UUID
	return h, nil
}
