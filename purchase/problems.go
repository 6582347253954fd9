package purchase

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
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
	ErrUnavailable      = errors.New("a dependency of the purchase service is unavailable")
	errMethodNotAllowed = errors.New("method not allowed")
)

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
	{ErrBuyerLimit, "buyer_limit_reached", http.StatusTooManyRequests, "Buyer limit reached"},
	{ErrInvalidRequest, "invalid_request", http.StatusBadRequest, "Invalid request"},
	{errMethodNotAllowed, "method_not_allowed", http.StatusMethodNotAllowed, "Method not allowed"},
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
}

const problemTypeBase = "https://fluxorder.io/problems/"

// rendered holds each sentinel's body, marshalled once: a hot-seat storm
// answers the same few problems tens of thousands of times a second.
var rendered = func() map[error]renderedProblem {
	m := make(map[error]renderedProblem, len(problems))
	for _, p := range problems {
		body := renderProblem(p, p.err.Error())
		m[p.err] = renderedProblem{body, []string{strconv.Itoa(len(body))}}
	}
	return m
}()

type renderedProblem struct {
	body          []byte
	contentLength []string
}

func renderProblem(p problem, detail string) []byte {
	body, _ := json.Marshal(Problem{Type: problemTypeBase + p.code, Title: p.title, Status: p.status, Detail: detail, Code: p.code})
	return append(body, '\n')
}

// writeProblem answers err as application/problem+json. The detail is the
// error text, which for our sentinels and wrapped validation errors is safe
// to show; anything unexpected is not echoed.
func writeProblem(w http.ResponseWriter, err error) {
	r, ok := rendered[err]
	p := problemFor(err)
	if !ok {
		detail := err.Error()
		if p.err == nil {
			detail = "unexpected error"
		}
		r.body = renderProblem(p, detail)
		r.contentLength = []string{strconv.Itoa(len(r.body))}
	}
	h := w.Header()
	if p.status == http.StatusServiceUnavailable {
		h["Retry-After"] = retryAfter
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
)
