package purchase

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/google/uuid"
)

// Outcomes of a purchase that are not an order. Each maps to exactly one
// problem code in the problems table.
var (
	ErrTicketLocked     = errors.New("another buyer holds this ticket right now")
	ErrTicketSold       = errors.New("this ticket is already sold")
	ErrSoldOut          = errors.New("every ticket is sold")
	ErrTicketNotFound   = errors.New("no such ticket")
	ErrOrderNotFound    = errors.New("no such order")
	ErrSaleNotStarted   = errors.New("the sale has not started yet")
	ErrSaleEnded        = errors.New("the sale has ended")
	ErrSalePaused       = errors.New("the sale is paused")
	ErrBuyerLimit       = errors.New("this buyer holds the maximum number of tickets")
	ErrInvalidRequest   = errors.New("invalid request")
	ErrOrderPending     = errors.New("the outcome of this order is not settled yet; ask again after Retry-After")
	ErrUnavailable      = errors.New("the purchase service is unavailable")
	ErrPassRequired     = errors.New("this sale has a waiting room: purchases need Authorization: Bearer <pass> from POST /v1/queue")
	ErrPassInvalid      = errors.New("the pass is invalid, expired or another buyer's")
	ErrQueueNotFound    = errors.New("no such queue id, or this sale has no waiting room")
	ErrTicketHeld       = errors.New("this ticket is held by a buyer during checkout; it is free again if the hold ends")
	ErrHoldNotFound     = errors.New("no such hold")
	ErrHoldExpired      = errors.New("the hold expired or was released; the seat may have been sold to another buyer")
	ErrHoldsDisabled    = errors.New("this sale sells in one step: holds are off (holdTTL is 0)")
	errMethodNotAllowed = errors.New("method not allowed")
	errNoSuchEndpoint   = errors.New("no such endpoint")

	// ErrSeatStoreUnavailable and ErrDatabaseUnavailable are the causes of
	// ErrUnavailable a buyer is told about: a fixed sentence each, never the
	// driver's error (it names addresses, users, databases). Wrap the
	// driver error with %w after them; it goes to the log.
	ErrSeatStoreUnavailable = &cause{"the seat store is unavailable", ErrUnavailable}
	ErrDatabaseUnavailable  = &cause{"the order database is unavailable", ErrUnavailable}
)

// cause is a sentinel that is also its parent (errors.Is(c, parent)).
type cause struct {
	msg    string
	parent error
}

func (c *cause) Error() string { return c.msg }
func (c *cause) Unwrap() error { return c.parent }

// unavailable wraps a driver error under one of the causes above.
func unavailable(c *cause, err error) error { return fmt.Errorf("%w: %w", c, err) }

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

// RetryAfterError asks the client to come back after a number of seconds.
type RetryAfterError struct {
	Seconds int
	Err     error
}

func (e *RetryAfterError) Error() string { return e.Err.Error() }
func (e *RetryAfterError) Unwrap() error { return e.Err }

// problem is one row of the table: a stable code, its HTTP status and title.
type problem struct {
	err    error
	code   string
	status int
	title  string
}

var problems = []problem{
	{ErrTicketLocked, "ticket_locked", http.StatusConflict, "Ticket locked"},
	{ErrTicketSold, "ticket_sold", http.StatusConflict, "Ticket sold"},
	{ErrSoldOut, "sold_out", http.StatusConflict, "Sold out"},
	{ErrTicketNotFound, "ticket_not_found", http.StatusNotFound, "Ticket not found"},
	{ErrOrderNotFound, "order_not_found", http.StatusNotFound, "Order not found"},
	{ErrSaleNotStarted, "sale_not_started", http.StatusForbidden, "Sale not started"},
	{ErrSaleEnded, "sale_ended", http.StatusForbidden, "Sale ended"},
	{ErrSalePaused, "sale_paused", http.StatusServiceUnavailable, "Sale paused"},
	// 403, not 429: the limit is permanent for this buyer, and clients and
	// proxies retry 429 by themselves.
	{ErrBuyerLimit, "buyer_limit_reached", http.StatusForbidden, "Buyer limit reached"},
	{ErrPassRequired, "pass_required", http.StatusUnauthorized, "Pass required"},
	{ErrPassInvalid, "pass_invalid", http.StatusForbidden, "Pass invalid"},
	{ErrQueueNotFound, "queue_not_found", http.StatusNotFound, "Queue not found"},
	{ErrInvalidRequest, "invalid_request", http.StatusBadRequest, "Invalid request"},
	{ErrTicketHeld, "ticket_held", http.StatusConflict, "Ticket held"},
	{ErrHoldNotFound, "hold_not_found", http.StatusNotFound, "Hold not found"},
	{ErrHoldExpired, "hold_expired", http.StatusGone, "Hold expired"},
	{ErrHoldsDisabled, "holds_disabled", http.StatusConflict, "Holds disabled"},
	{errMethodNotAllowed, "method_not_allowed", http.StatusMethodNotAllowed, "Method not allowed"},
	{errNoSuchEndpoint, "not_found", http.StatusNotFound, "Not found"},
	{ErrOrderPending, "order_pending", http.StatusServiceUnavailable, "Order pending"},
	{ErrSeatStoreUnavailable, "unavailable", http.StatusServiceUnavailable, "Service unavailable"},
	{ErrDatabaseUnavailable, "unavailable", http.StatusServiceUnavailable, "Service unavailable"},
	{ErrUnavailable, "unavailable", http.StatusServiceUnavailable, "Service unavailable"},
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
	// seat's lock was taken): GET /v1/orders/{orderId} tells the outcome.
	OrderID string `json:"orderId,omitempty"`
}

const problemTypeBase = "https://fluxorder.io/problems/"

// rendered holds each sentinel's body, marshalled once: a hot-seat storm
// answers the same few problems tens of thousands of times a second.
var rendered = func() map[error]renderedProblem {
	m := make(map[error]renderedProblem, len(problems))
	for _, p := range problems {
		body := renderProblem(p, p.err.Error(), "")
		m[p.err] = renderedProblem{body, []string{strconv.Itoa(len(body))}}
	}
	return m
}()

type renderedProblem struct {
	body          []byte
	contentLength []string
}

func renderProblem(p problem, detail, orderID string) []byte {
	body, _ := json.Marshal(Problem{Type: problemTypeBase + p.code, Title: p.title, Status: p.status, Detail: detail, Code: p.code, OrderID: orderID})
	return append(body, '\n')
}

// writeProblem answers err as application/problem+json. The detail is the
// fixed sentence of err's row; only invalid_request carries the error text
// (our own validation message, which never quotes the input). Driver
// errors never reach a buyer.
func writeProblem(w http.ResponseWriter, err error) {
	r, ok := rendered[err]
	p := problemFor(err)
	if !ok {
		detail, orderID := "unexpected error", ""
		if p.err != nil {
			detail = p.err.Error()
		}
		if p.err == ErrInvalidRequest {
			detail = err.Error()
		}
		var pending *PendingOrderError
		if errors.As(err, &pending) {
			orderID = pending.OrderID.String()
		}
		r.body = renderProblem(p, detail, orderID)
		r.contentLength = []string{strconv.Itoa(len(r.body))}
	}
	h := w.Header()
	var ra *RetryAfterError
	switch {
	case errors.As(err, &ra):
		h["Retry-After"] = []string{strconv.Itoa(ra.Seconds)}
	case p.status == http.StatusServiceUnavailable:
		h["Retry-After"] = retryAfter
	case p.status == http.StatusUnauthorized:
		h["Www-Authenticate"] = bearerChallenge // RFC 9110 §11.6.1: a 401 names its scheme
	}
	h["Content-Type"] = problemContentType
	h["Content-Length"] = r.contentLength
	w.WriteHeader(p.status)
	_, _ = w.Write(r.body)
}

// Header values shared by every answer (net/http only reads them).
var (
	retryAfter         = []string{"1"}
	problemContentType = []string{"application/problem+json"}
	bearerChallenge    = []string{`Bearer realm="waiting room"`}
)
