package orderstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
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

// seatError maps the seat functions' SQLSTATEs to errors; nil for others.
func seatError(e *pgconn.PgError) error {
	switch e.Code {
	case "FO001":
		owner, _ := uuid.Parse(e.Detail)
		return &SoldError{OrderID: owner}
	case "FO002":
		n, _ := strconv.Atoi(e.Detail)
		return &LimitError{Orders: n}
	case "FO003":
		h := &HeldError{}
		if id, ms, ok := strings.Cut(e.Detail, " "); ok {
			h.HoldID, _ = uuid.Parse(id)
			if v, err := strconv.ParseInt(ms, 10, 64); err == nil {
				h.Until = time.UnixMilli(v)
			}
		}
		return h
	case "FO004":
		return ErrHoldNotFound
	case "FO005":
		return ErrHoldExpired
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

// PlaceHold holds r.TicketID for r.BuyerID in one statement (hold_seat).
// replayed is true when r.HoldID existed already (a retry). Refusals:
// *SoldError, *HeldError, *LimitError.
func (s *Store) PlaceHold(ctx context.Context, r HoldRequest) (h Hold, replayed bool, err error) {
	err = s.pool.QueryRow(ctx, `SELECT * FROM hold_seat($1, $2, $3, $4, $5)`,
		r.TicketID, r.HoldID, r.BuyerID, r.TTL.Milliseconds(), r.MaxPerBuyer).
		Scan(&replayed, &h.ID, &h.TicketID, &h.BuyerID, &h.ExpiresAt)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "holds_pkey" {
		// A concurrent retry of the same hold id (a keyed hold) committed
		// first, on another seat: this attempt is its replay.
		if h, err = s.Hold(ctx, r.HoldID); err != nil {
			return Hold{}, false, fmt.Errorf("hold ticket %d: replay hold %s: %w", r.TicketID, r.HoldID, err)
		}
		return h, true, nil
	}
	if err != nil {
		if serr := seatRefusal(err); serr != nil {
			return Hold{}, false, serr
		}
		return Hold{}, false, fmt.Errorf("hold ticket %d: %w", r.TicketID, err)
	}
	h.State = HoldHeld
	return h, replayed, nil
}

// ConfirmHold turns the buyer's live hold into order orderID with a
// payment reference, in one statement (confirm_hold). A repeat answers the
// same order, replayed. Refusals: ErrHoldNotFound (no such hold, or another
// buyer's), ErrHoldExpired (expired or released).
func (s *Store) ConfirmHold(ctx context.Context, holdID uuid.UUID, buyerID string, orderID uuid.UUID, paymentRef string) (o Order, replayed bool, err error) {
	var hold uuid.NullUUID
	var ref *string
	err = s.pool.QueryRow(ctx, `SELECT * FROM confirm_hold($1, $2, $3, $4)`, holdID, buyerID, orderID, paymentRef).
		Scan(&replayed, &o.ID, &o.TicketID, &o.BuyerID, &o.PurchasedAt, &hold, &ref)
	if err != nil {
		if serr := seatRefusal(err); serr != nil {
			return Order{}, false, serr
		}
		return Order{}, false, fmt.Errorf("confirm hold %s: %w", holdID, err)
	}
	o.HoldID = hold.UUID
	if ref != nil {
		o.PaymentRef = *ref
	}
	return o, replayed, nil
}

// ReleaseHold frees a live hold's seat at once (release_hold). released is
// false when the hold was already released, expired or confirmed: the call
// is idempotent. ErrHoldNotFound when there is no such hold.
func (s *Store) ReleaseHold(ctx context.Context, holdID uuid.UUID) (ticket int64, released bool, err error) {
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
func (s *Store) Hold(ctx context.Context, holdID uuid.UUID) (Hold, error) {
	var h Hold
	var order uuid.NullUUID
	err := s.pool.QueryRow(ctx, `SELECT id, ticket_id, buyer_id, expires_at,
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
