package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/flux-order/flux-order/purchase/sale"
)

// The answers of the HTTP layer itself; every other code comes from the
// outcomes in package sale.
var (
	errMethodNotAllowed = errors.New("method not allowed")
	errNoSuchEndpoint   = errors.New("no such endpoint")
)

// problem is one row of the table: a stable code, its HTTP status and title.
type problem struct {
	err    error
	code   string
	status int
	title  string
}

var problems = []problem{
	{sale.ErrTicketLocked, "ticket_locked", http.StatusConflict, "Ticket locked"},
	{sale.ErrTicketSold, "ticket_sold", http.StatusConflict, "Ticket sold"},
	{sale.ErrSoldOut, "sold_out", http.StatusConflict, "Sold out"},
	{sale.ErrTicketNotFound, "ticket_not_found", http.StatusNotFound, "Ticket not found"},
	{sale.ErrOrderNotFound, "order_not_found", http.StatusNotFound, "Order not found"},
	{sale.ErrSaleNotStarted, "sale_not_started", http.StatusForbidden, "Sale not started"},
	{sale.ErrSaleEnded, "sale_ended", http.StatusForbidden, "Sale ended"},
	{sale.ErrSalePaused, "sale_paused", http.StatusServiceUnavailable, "Sale paused"},
	// 403, not 429: the limit is permanent for this buyer, and clients and
	// proxies retry 429 by themselves.
	{sale.ErrBuyerLimit, "buyer_limit_reached", http.StatusForbidden, "Buyer limit reached"},
	{sale.ErrPassRequired, "pass_required", http.StatusUnauthorized, "Pass required"},
	{sale.ErrPassInvalid, "pass_invalid", http.StatusForbidden, "Pass invalid"},
	// Buyer identity (spec.buyerAuth): no token, or one that does not
	// verify. 401 with a Bearer challenge (RFC 6750 §3).
	{sale.ErrAuthRequired, "auth_required", http.StatusUnauthorized, "Authentication required"},
	{sale.ErrAuthInvalid, "auth_invalid", http.StatusUnauthorized, "Authentication invalid"},
	{sale.ErrBuyerMismatch, "buyer_mismatch", http.StatusForbidden, "Buyer mismatch"},
	{sale.ErrQueueNotFound, "queue_not_found", http.StatusNotFound, "Queue not found"},
	{sale.ErrInvalidRequest, "invalid_request", http.StatusBadRequest, "Invalid request"},
	{sale.ErrTicketHeld, "ticket_held", http.StatusConflict, "Ticket held"},
	{sale.ErrHoldNotFound, "hold_not_found", http.StatusNotFound, "Hold not found"},
	{sale.ErrHoldExpired, "hold_expired", http.StatusGone, "Hold expired"},
	{sale.ErrHoldsDisabled, "holds_disabled", http.StatusConflict, "Holds disabled"},
	// A per-client cap of the front door (joins, seat streams): always
	// with Retry-After.
	{sale.ErrTooManyRequests, "too_many_requests", http.StatusTooManyRequests, "Too many requests"},
	// A join without (or with a bad) proof of work: the answer carries a
	// fresh challenge (Flux-Order-Challenge, Flux-Order-Difficulty).
	{sale.ErrProofRequired, "proof_required", http.StatusPreconditionRequired, "Proof of work required"},
	{sale.ErrProofInvalid, "proof_invalid", http.StatusPreconditionRequired, "Proof of work invalid"},
	// A cancelled order, or a retry of its Idempotency-Key (or hold
	// confirmation): the problem names the order.
	{sale.ErrOrderCancelled, "order_cancelled", http.StatusConflict, "Order cancelled"},
	// The admin API (admin.go), on the pod's private port only.
	{errAdminDisabled, "admin_disabled", http.StatusNotFound, "Admin API off"},
	{errAdminAuthRequired, "admin_auth_required", http.StatusUnauthorized, "Admin authentication required"},
	{errAdminAuthInvalid, "admin_auth_invalid", http.StatusUnauthorized, "Admin authentication invalid"},
	{errMethodNotAllowed, "method_not_allowed", http.StatusMethodNotAllowed, "Method not allowed"},
	{errNoSuchEndpoint, "not_found", http.StatusNotFound, "Not found"},
	{sale.ErrOrderPending, "order_pending", http.StatusServiceUnavailable, "Order pending"},
	{sale.ErrSeatStoreUnavailable, "unavailable", http.StatusServiceUnavailable, "Service unavailable"},
	{sale.ErrDatabaseUnavailable, "unavailable", http.StatusServiceUnavailable, "Service unavailable"},
	{sale.ErrIdentityUnavailable, "unavailable", http.StatusServiceUnavailable, "Service unavailable"},
	{sale.ErrUnavailable, "unavailable", http.StatusServiceUnavailable, "Service unavailable"},
}

// unknownProblem answers errors outside the table; it is never expected.
var unknownProblem = problem{nil, "internal", http.StatusInternalServerError, "Internal error"}

// problemFor finds err's row.
func problemFor(err error) problem {
	for _, p := range problems {
		if errors.Is(err, p.err) {
			return p
		}
	}
	return unknownProblem
}

// Problem is an RFC 9457 problem details body with a stable code.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	Code   string `json:"code"`
	// OrderID names the order of an uncertain purchase (a 503 after the
	// seat's lock was taken): GET /v1/orders/{orderId} tells the outcome;
	// or the cancelled order of an order_cancelled.
	OrderID string `json:"orderId,omitempty"`
}

const problemTypeBase = "https://fluxorder.io/problems/"

// rendered holds each sentinel's whole answer, made once: a hot-seat storm
// answers the same few problems tens of thousands of times a second, each
// with bytes written as they are and header values assigned, no encoding,
// no search of the table and no errors.As.
var rendered = func() map[error]*renderedProblem {
	m := make(map[error]*renderedProblem, len(problems))
	for _, p := range problems {
		if _, dup := m[p.err]; dup {
			continue // problemFor answers the first row of an error
		}
		body := renderProblem(p, p.err.Error(), "")
		r := &renderedProblem{problem: p, body: body, contentLength: []string{strconv.Itoa(len(body))}}
		r.extraHeader, r.extraValue = extraHeader(p, nil)
		m[p.err] = r
	}
	return m
}()

type renderedProblem struct {
	problem
	body          []byte
	contentLength []string
	// extraHeader, when set, is the header the problem adds (Retry-After
	// or WWW-Authenticate, canonical), with its value.
	extraHeader string
	extraValue  []string
}

func renderProblem(p problem, detail, orderID string) []byte {
	body, _ := json.Marshal(Problem{Type: problemTypeBase + p.code, Title: p.title, Status: p.status, Detail: detail, Code: p.code, OrderID: orderID})
	return append(body, '\n')
}

// writeProblem answers err as application/problem+json. The detail is the
// fixed sentence of err's row; only invalid_request carries the error text
// (our own validation message, which never quotes the input: the decoder
// names what is wrong, never the bytes it read). Driver errors never reach
// a buyer.
//
// It returns err's row of the table (the metrics count its code).
func writeProblem(w http.ResponseWriter, err error) problem {
	if r, ok := rendered[err]; ok {
		h := w.Header()
		if r.extraHeader != "" {
			h[r.extraHeader] = r.extraValue
		}
		h["Content-Type"] = problemContentType
		h["Content-Length"] = r.contentLength
		w.WriteHeader(r.status)
		_, _ = w.Write(r.body)
		return r.problem
	}
	p := problemFor(err)
	var body []byte
	{
		detail, orderID := "unexpected error", ""
		if p.err != nil {
			detail = p.err.Error()
		}
		if p.err == sale.ErrInvalidRequest {
			detail = err.Error()
		}
		var pending *sale.PendingOrderError
		var cancelled *sale.CancelledOrderError
		switch {
		case errors.As(err, &pending):
			orderID = pending.OrderID.String()
		case errors.As(err, &cancelled):
			orderID = cancelled.OrderID.String()
		}
		body = renderProblem(p, detail, orderID)
	}
	h := w.Header()
	if name, value := extraHeader(p, err); name != "" {
		h[name] = value
	}
	h["Content-Type"] = problemContentType
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(p.status)
	_, _ = w.Write(body)
	return p
}

// extraHeader is the header an answer of row p for err carries beside its
// body, if any: Retry-After, or the challenge of a 401.
func extraHeader(p problem, err error) (string, []string) {
	var ra *sale.RetryAfterError
	switch {
	case err != nil && errors.As(err, &ra):
		return "Retry-After", []string{strconv.Itoa(ra.Seconds)}
	case p.status == http.StatusServiceUnavailable || p.status == http.StatusTooManyRequests:
		return "Retry-After", retryAfter
	case p.err == sale.ErrAuthRequired:
		return "Www-Authenticate", identityChallenge
	case p.err == sale.ErrAuthInvalid:
		return "Www-Authenticate", invalidTokenChallenge
	case p.err == errAdminAuthRequired || p.err == errAdminAuthInvalid:
		return "Www-Authenticate", adminChallenge
	case p.status == http.StatusUnauthorized:
		return "Www-Authenticate", bearerChallenge // RFC 9110 §11.6.1: a 401 names its scheme
	}
	return "", nil
}

// Header values shared by every answer (net/http only reads them).
var (
	retryAfter         = []string{"1"}
	problemContentType = []string{"application/problem+json"}
	bearerChallenge    = []string{`Bearer realm="waiting room"`}
	// The identity token's challenges (RFC 6750 §3): no error code when
	// none was sent, invalid_token for one that does not verify.
	identityChallenge     = []string{`Bearer realm="flux-order"`}
	invalidTokenChallenge = []string{`Bearer realm="flux-order", error="invalid_token"`}
)
