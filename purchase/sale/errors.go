package sale

import (
	"errors"
	"fmt"

	"github.com/google/uuid"
)

// Outcomes of a request that are not an order. Each maps to exactly one
// problem code in httpapi's problem table.
var (
	ErrTicketLocked   = errors.New("another buyer holds this ticket right now")
	ErrTicketSold     = errors.New("this ticket is already sold")
	ErrSoldOut        = errors.New("every ticket is sold")
	ErrTicketNotFound = errors.New("no such ticket")
	ErrOrderNotFound  = errors.New("no such order")
	ErrSaleNotStarted = errors.New("the sale has not started yet")
	ErrSaleEnded      = errors.New("the sale has ended")
	ErrSalePaused     = errors.New("the sale is paused")
	ErrBuyerLimit     = errors.New("this buyer holds the maximum number of tickets")
	ErrInvalidRequest = errors.New("invalid request")
	ErrOrderPending   = errors.New("the outcome of this order is not settled yet; ask again after Retry-After")
	ErrUnavailable    = errors.New("the purchase service is unavailable")
	ErrPassRequired   = errors.New("this sale has a waiting room: purchases need Authorization: Bearer <pass> from POST /v1/queue")
	ErrPassInvalid    = errors.New("the pass is invalid, expired or another buyer's")
	ErrQueueNotFound  = errors.New("no such queue id, or this sale has no waiting room")
	ErrTicketHeld     = errors.New("this ticket is held by a buyer during checkout; it is free again if the hold ends")
	ErrHoldNotFound   = errors.New("no such hold")
	ErrHoldExpired    = errors.New("the hold expired or was released; the seat may have been sold to another buyer")
	ErrHoldsDisabled  = errors.New("this sale sells in one step: holds are off (holdTTL is 0)")
	ErrAuthRequired   = errors.New("this sale needs the buyer's identity: send Authorization: Bearer <token> from the platform's sign-in")
	ErrAuthInvalid    = errors.New("the identity token is invalid or expired, or not for this sale")
	ErrBuyerMismatch  = errors.New("buyerId is not the subject of the identity token")
	// ErrTooManyRequests: a per-client cap of the front door (package
	// frontdoor); the client may come back after Retry-After.
	ErrTooManyRequests = errors.New("too many requests from this client address; retry after Retry-After")
	// ErrProofRequired and ErrProofInvalid: the waiting room asks a join
	// for a proof of work (Flux-Order-Proof) and answers a fresh challenge.
	ErrProofRequired = errors.New("this waiting room asks a proof of work: solve the challenge in Flux-Order-Challenge and join again with Flux-Order-Proof")
	ErrProofInvalid  = errors.New("the proof of work is wrong, expired, already used or another buyer's: solve the new challenge in Flux-Order-Challenge")
	// ErrOrderCancelled: the order (or the order this Idempotency-Key or
	// hold made) was cancelled by the platform; the key buys nothing again.
	ErrOrderCancelled = errors.New("this order was cancelled; its Idempotency-Key buys nothing again (use a new key to buy again)")

	// ErrSeatStoreUnavailable and ErrDatabaseUnavailable are the causes of
	// ErrUnavailable a buyer is told about: a fixed sentence each, never the
	// driver's error (it names addresses, users, databases). Wrap the
	// driver error with Unavailable; it goes to the log.
	ErrSeatStoreUnavailable = &Cause{"the seat store is unavailable", ErrUnavailable}
	ErrDatabaseUnavailable  = &Cause{"the order database is unavailable", ErrUnavailable}
	ErrIdentityUnavailable  = &Cause{"buyer identity cannot be verified by this server right now", ErrUnavailable}
)

// Cause is a sentinel that is also its parent (errors.Is(c, parent)).
type Cause struct {
	msg    string
	parent error
}

func (c *Cause) Error() string { return c.msg }
func (c *Cause) Unwrap() error { return c.parent }

// Unavailable wraps a driver error under one of the causes above.
func Unavailable(c *Cause, err error) error { return fmt.Errorf("%w: %w", c, err) }

// PendingOrderError is a 503 given after a seat's lock was taken for
// OrderID: the order may have committed. The problem body names the order,
// and GET /v1/orders/{OrderID} tells the buyer the outcome once it is
// settled.
type PendingOrderError struct {
	OrderID uuid.UUID
	Err     error
}

func (e *PendingOrderError) Error() string {
	return e.Err.Error() + " (order " + e.OrderID.String() + ")"
}
func (e *PendingOrderError) Unwrap() error { return e.Err }

// CancelledOrderError is ErrOrderCancelled naming the order (the problem
// body's orderId). BuyerID, not shown, lets the HTTP layer check that the
// caller is the order's buyer before saying so.
type CancelledOrderError struct {
	OrderID uuid.UUID
	BuyerID string
}

func (e *CancelledOrderError) Error() string { return ErrOrderCancelled.Error() }
func (e *CancelledOrderError) Unwrap() error { return ErrOrderCancelled }

// RetryAfterError asks the client to come back after a number of seconds.
type RetryAfterError struct {
	Seconds int
	Err     error
}

func (e *RetryAfterError) Error() string { return e.Err.Error() }
func (e *RetryAfterError) Unwrap() error { return e.Err }
