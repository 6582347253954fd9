package httpapi

import (
	"context"
	"net/http"

	"github.com/google/uuid"

	"github.com/flux-order/flux-order/purchase/checkout"
	"github.com/flux-order/flux-order/purchase/waitingroom"
)

// Checkout sells the seats (*checkout.Service).
type Checkout interface {
	Purchase(ctx context.Context, req checkout.Request) (checkout.Order, bool, error)
	PlaceHold(ctx context.Context, req checkout.HoldRequest) (checkout.Hold, bool, error)
	ConfirmHold(ctx context.Context, holdID uuid.UUID, buyer, paymentRef string) (checkout.Order, bool, error)
	ReleaseHold(ctx context.Context, holdID uuid.UUID) error
	Hold(ctx context.Context, holdID uuid.UUID) (checkout.Hold, error)
	Ticket(ctx context.Context, id int64) (checkout.TicketStatus, error)
	Availability(ctx context.Context) (checkout.Availability, error)
	Order(ctx context.Context, id uuid.UUID) (checkout.Order, error)
	Cancel(ctx context.Context, id uuid.UUID, by, reason string) (checkout.Cancellation, bool, error)
}

// Queue is the waiting room (*waitingroom.Room).
type Queue interface {
	On() bool
	CheckPass(authorization []string, buyerID string) error
	CheckPassHeader(values []string, buyerID string) error
	Join(ctx context.Context, buyer string) (waitingroom.Place, string, error)
	Poll(queueID string) (waitingroom.Place, error)
	// Leave gives a place up; a non-empty buyer must be the queue id's.
	Leave(ctx context.Context, queueID, buyer string) error
	// CheckProof lets a join through, or refuses it with a
	// *waitingroom.ChallengeError carrying the challenge to solve.
	CheckProof(ctx context.Context, buyer, proof string) error
}

// Identity verifies the buyers' identity tokens (*buyerauth.Verifier).
// Subject answers sale.ErrAuthRequired or sale.ErrAuthInvalid (wrapped)
// for a request it refuses.
type Identity interface {
	On() bool
	Subject(authorization []string) (string, error)
}

// Door caps what one client asks of the pod (*frontdoor.Door): it refuses
// with a *sale.RetryAfterError wrapping sale.ErrTooManyRequests.
type Door interface {
	// OpenStream counts a seat stream of r's client until release.
	OpenStream(r *http.Request) (release func(), err error)
	// Join takes one join of r's client.
	Join(r *http.Request) error
}

// openDoor caps nothing (an API built without a Door).
type openDoor struct{}

func (openDoor) OpenStream(*http.Request) (func(), error) { return func() {}, nil }
func (openDoor) Join(*http.Request) error                 { return nil }

// Feed streams seat changes to pages (*seatfeed.Hub). Stream returns an
// error, having written nothing, when it cannot serve.
type Feed interface {
	Stream(w http.ResponseWriter, r *http.Request) error
}
