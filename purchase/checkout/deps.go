package checkout

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/flux-order/flux-order/purchase/orderstore"
	"github.com/flux-order/flux-order/purchase/seatlock"
)

// Locks is the seat lock space in Redis (*seatlock.Locks): fast refusals,
// never the truth.
type Locks interface {
	Acquire(ctx context.Context, id int64, token string) (seatlock.Result, error)
	AcquireFor(ctx context.Context, id int64, token string, ttl time.Duration) (seatlock.Result, error)
	AcquireAny(ctx context.Context, token string, ttl time.Duration, tries int) (int64, error)
	Peek(ctx context.Context, id int64) (seatlock.Result, bool, error)
	MarkSold(ctx context.Context, id int64, orderID string) error
	PutHold(ctx context.Context, id int64, token, holdID string, until time.Time) error
	ExpireHold(ctx context.Context, id int64, token, holdID string, until time.Time) error
	Release(ctx context.Context, id int64, token string) (bool, error)
	Refill(ctx context.Context, ids []int64) error
	Unsell(ctx context.Context, seats []seatlock.SoldSeat) (int, error)
	Announce(ctx context.Context, msg string) error
	Listen(ctx context.Context, fn func(msg string))
	TTL() time.Duration
	SetTTL(ttl time.Duration)
}

// Store is the sale's PostgreSQL (*orderstore.Store): the fence, and the
// truth of every order and hold.
type Store interface {
	Seed(ctx context.Context, tickets int64) error
	Confirm(ctx context.Context, p orderstore.Purchase) (orderstore.Order, bool, error)
	Order(ctx context.Context, id uuid.UUID) (orderstore.Order, error)
	KeyedPurchaseInFlight(ctx context.Context, id uuid.UUID) (bool, error)
	OrderByKey(ctx context.Context, buyerID, key string) (orderstore.Order, error)
	TicketState(ctx context.Context, id int64) (sold, held bool, err error)
	Counts(ctx context.Context) (orderstore.Counts, error)
	UnsoldFrom(ctx context.Context, from int64, limit int) ([]int64, error)
	PlaceHold(ctx context.Context, r orderstore.HoldRequest) (orderstore.Hold, bool, error)
	ConfirmHold(ctx context.Context, holdID uuid.UUID, buyerID string, orderID uuid.UUID, paymentRef string) (orderstore.Order, bool, error)
	ReleaseHold(ctx context.Context, holdID uuid.UUID) (ticket int64, released bool, err error)
	Hold(ctx context.Context, holdID uuid.UUID) (orderstore.Hold, error)
	CancelOrder(ctx context.Context, id uuid.UUID, by, reason string) (orderstore.Cancellation, bool, error)
	RecentCancellations(ctx context.Context, cursor int64, window time.Duration) ([]orderstore.Cancellation, int64, error)
	CancelledCount(ctx context.Context) (int64, error)
}
