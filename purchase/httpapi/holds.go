package httpapi

import (
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/flux-order/flux-order/purchase/checkout"
	"github.com/flux-order/flux-order/purchase/sale"
)

// MaxPaymentRefLen bounds a confirmation's payment reference: the id a
// payment provider gave the buyer's payment (Stripe's pi_…, an Adyen PSP
// reference), stored with the order and echoed back.
const MaxPaymentRefLen = 128

// holdRoutes registers the hold API (issue 11). Creating a hold needs the
// buyer's pass like a purchase; confirm, release and GET need none: the hold
// id is the capability, and a pass may expire during checkout.
func (s *API) holdRoutes(mux *http.ServeMux) {
	mux.HandleFunc("/v1/tickets/{id}/hold", s.placeHold(func(r *http.Request) (int64, error) {
		id, ok := parseTicketID(r.PathValue("id"))
		if !ok {
			return 0, sale.ErrTicketNotFound
		}
		return id, nil
	}))
	mux.HandleFunc("/v1/holds", s.placeHold(func(*http.Request) (int64, error) { return 0, nil }))
	mux.HandleFunc("/v1/holds/{holdId}/confirm", s.handleConfirmHold)
	mux.HandleFunc("/v1/holds/{holdId}", s.handleHold)
}

// HoldBody is a hold as the API answers it (the wire format); State and OrderID only on GET.
type HoldBody struct {
	HoldID    uuid.UUID `json:"holdId"`
	TicketID  int64     `json:"ticketId"`
	BuyerID   string    `json:"buyerId"`
	ExpiresAt time.Time `json:"expiresAt"`
	State     string    `json:"state,omitempty"`
	OrderID   uuid.UUID `json:"orderId,omitzero"`
}

func newHoldBody(h checkout.Hold) HoldBody {
	return HoldBody{HoldID: h.ID, TicketID: h.TicketID, BuyerID: h.BuyerID, ExpiresAt: h.ExpiresAt.UTC()}
}

// answerHold writes a hold request's answer and counts it.
func (s *API) answerHold(w http.ResponseWriter, op string, start time.Time, status int, body any, replayed bool, err error) {
	ok := "created"
	if status == http.StatusNoContent {
		ok = "released"
	}
	outcome := s.answer(w, status, body, replayed, err, ok)
	s.metrics.observeHold(op, outcome, time.Since(start).Seconds())
}

// placeHold serves POST /v1/tickets/{id}/hold and POST /v1/holds (seat 0).
func (s *API) placeHold(seat func(*http.Request) (int64, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		h, replayed, err := s.servePlaceHold(w, r, seat)
		s.answerHold(w, "hold", start, http.StatusCreated, newHoldBody(h), replayed, err)
	}
}

func (s *API) servePlaceHold(w http.ResponseWriter, r *http.Request, seat func(*http.Request) (int64, error)) (checkout.Hold, bool, error) {
	key, body, err := readPost(w, r)
	if err != nil {
		return checkout.Hold{}, false, err
	}
	id, err := seat(r)
	if err != nil {
		return checkout.Hold{}, false, err
	}
	b, err := s.buyerOf(r, body)
	if err != nil {
		return checkout.Hold{}, false, err
	}
	// As for a purchase: a refused pass holds nothing new, but a keyed
	// retry still learns its hold; checkout decides both.
	refusal := s.checkPass(r, b)
	return s.checkout.PlaceHold(r.Context(), checkout.HoldRequest{TicketID: id, BuyerID: b.id, IdempotencyKey: key, Refusal: refusal})
}

// handleConfirmHold serves POST /v1/holds/{holdId}/confirm
// {"buyerId","paymentRef"}: 201 with the order, the same order again on a
// repeat (Idempotent-Replayed: true).
func (s *API) handleConfirmHold(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	o, replayed, err := s.serveConfirmHold(w, r)
	s.answerHold(w, "confirm", start, http.StatusCreated, o, replayed, err)
}

func (s *API) serveConfirmHold(w http.ResponseWriter, r *http.Request) (checkout.Order, bool, error) {
	// An Idempotency-Key is accepted and echoed but not needed: the hold
	// id already makes the confirmation idempotent.
	_, body, err := readPost(w, r)
	if err != nil {
		return checkout.Order{}, false, err
	}
	var sub string
	if s.identityOn() {
		if sub, err = s.subject(r); err != nil {
			return checkout.Order{}, false, err
		}
	}
	holdID, err := uuid.Parse(r.PathValue("holdId"))
	if err != nil {
		return checkout.Order{}, false, sale.ErrHoldNotFound
	}
	buyer, ref, err := decodeConfirm(body, sub)
	if err != nil {
		return checkout.Order{}, false, err
	}
	return s.checkout.ConfirmHold(r.Context(), holdID, buyer, ref)
}

// handleHold serves GET (the hold and its state) and DELETE (release: 204,
// idempotent) of /v1/holds/{holdId}.
func (s *API) handleHold(w http.ResponseWriter, r *http.Request) {
	holdID, perr := uuid.Parse(r.PathValue("holdId"))
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		if err := s.authenticate(r); err != nil {
			writeProblem(w, err)
			return
		}
		if perr != nil {
			writeProblem(w, sale.ErrHoldNotFound)
			return
		}
		h, err := s.checkout.Hold(r.Context(), holdID)
		if err == nil {
			err = s.owner(r, h.BuyerID, sale.ErrHoldNotFound)
		}
		if err != nil {
			writeProblem(w, err)
			return
		}
		b := newHoldBody(h)
		b.State, b.OrderID = string(h.State), h.OrderID
		writeJSON(w, http.StatusOK, b)
	case http.MethodDelete:
		start := time.Now()
		err := s.authenticate(r)
		if err == nil && perr != nil {
			err = sale.ErrHoldNotFound
		}
		if err == nil && s.identityOn() {
			// Only the hold's buyer may release it: the hold id alone is
			// not enough once buyers are identified.
			var h checkout.Hold
			if h, err = s.checkout.Hold(r.Context(), holdID); err == nil {
				err = s.owner(r, h.BuyerID, sale.ErrHoldNotFound)
			}
		}
		if err == nil {
			err = s.checkout.ReleaseHold(r.Context(), holdID)
		}
		s.answerHold(w, "release", start, http.StatusNoContent, nil, false, err)
	default:
		w.Header().Set("Allow", "GET, HEAD, DELETE")
		writeProblem(w, errMethodNotAllowed)
	}
}

// decodeConfirm reads {"buyerId": "...", "paymentRef": "..."} strictly (see
// decode.go). paymentRef is 1..MaxPaymentRefLen bytes of printable ASCII
// without surrounding spaces: an id from a payment provider, not free text.
// With identity (sub, the token's subject, not empty) the buyerId may be
// left out ({"paymentRef": "..."}); given, it must be sub.
func decodeConfirm(body []byte, sub string) (buyer, ref string, err error) {
	if sub != "" {
		if v, err := parseStringObject(body, "paymentRef"); err == nil {
			return sub, v[0], checkPaymentRef(v[0])
		}
	}
	v, err := parseStringObject(body, "buyerId", "paymentRef")
	if err != nil {
		return "", "", fmt.Errorf("%w: body must be the JSON object {\"buyerId\": \"...\", \"paymentRef\": \"...\"}: %v", sale.ErrInvalidRequest, err)
	}
	if buyer, err = normalizeBuyerID(v[0]); err != nil {
		return "", "", err
	}
	if sub != "" && buyer != sub {
		return "", "", sale.ErrBuyerMismatch
	}
	return buyer, v[1], checkPaymentRef(v[1])
}

// checkPaymentRef validates a confirmation's paymentRef.
func checkPaymentRef(ref string) error {
	if ref == "" || len(ref) > MaxPaymentRefLen || ref[0] == ' ' || ref[len(ref)-1] == ' ' {
		return fmt.Errorf("%w: paymentRef must be 1..%d bytes, without leading or trailing spaces", sale.ErrInvalidRequest, MaxPaymentRefLen)
	}
	for i := 0; i < len(ref); i++ {
		if ref[i] < 0x20 || ref[i] > 0x7e {
			return fmt.Errorf("%w: paymentRef must be printable ASCII", sale.ErrInvalidRequest)
		}
	}
	return nil
}
