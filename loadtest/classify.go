package loadtest

import (
	"bytes"
	"net/http"
)

// Outcome is what one request got, as the summary counts it.
type Outcome int

// The outcomes, in the order the summary prints them.
const (
	Created        Outcome = iota // 201: an order
	TicketLocked                  // 409 ticket_locked: another buyer holds the seat
	TicketHeld                    // 409 ticket_held: a checkout hold keeps the seat
	TicketSold                    // 409 ticket_sold
	SoldOut                       // 409 sold_out (any-seat)
	BuyerLimit                    // 403 buyer_limit_reached
	OtherAnswer                   // any other status below 500 (404, 403, 400, a stray 2xx)
	ServerError                   // 5xx
	TransportError                // no answer: dial, timeout, reset, malformed HTTP
	numOutcomes
)

var outcomeNames = [numOutcomes]struct{ key, label string }{
	Created:        {"201", "201 created"},
	TicketLocked:   {"409_ticket_locked", "409 ticket_locked"},
	TicketHeld:     {"409_ticket_held", "409 ticket_held"},
	TicketSold:     {"409_ticket_sold", "409 ticket_sold"},
	SoldOut:        {"409_sold_out", "409 sold_out"},
	BuyerLimit:     {"403_buyer_limit_reached", "403 buyer_limit_reached"},
	OtherAnswer:    {"4xx_other", "4xx other"},
	ServerError:    {"5xx", "5xx"},
	TransportError: {"transport_error", "transport error"},
}

// Key is the outcome's name in JSON.
func (o Outcome) Key() string { return outcomeNames[o].key }

// String is the outcome's label in the summary.
func (o Outcome) String() string { return outcomeNames[o].label }

// Classify maps an answer to its outcome. Only 409 and 403 bodies are looked at, by
// a scan for the problem's "code" rather than JSON decoding: the hot loop
// classifies tens of thousands of answers a second.
func Classify(status int, body []byte) Outcome {
	switch {
	case status == http.StatusCreated:
		return Created
	case status == http.StatusConflict:
		switch string(problemCode(body)) {
		case "ticket_locked":
			return TicketLocked
		case "ticket_held":
			return TicketHeld
		case "ticket_sold":
			return TicketSold
		case "sold_out":
			return SoldOut
		}
		return OtherAnswer
	case status == http.StatusForbidden && string(problemCode(body)) == "buyer_limit_reached":
		return BuyerLimit
	case status >= 500:
		return ServerError
	}
	return OtherAnswer
}

// problemCode returns the value of the top-level-looking "code" member of a
// problem+json body, or nil. It tolerates whitespace around the colon;
// a "code" key inside a string value could fool it, which our problems never
// contain.
func problemCode(body []byte) []byte {
	const key = `"code"`
	for {
		i := bytes.Index(body, []byte(key))
		if i < 0 {
			return nil
		}
		body = body[i+len(key):]
		rest := skipSpace(body)
		if len(rest) == 0 || rest[0] != ':' {
			continue
		}
		rest = skipSpace(rest[1:])
		if len(rest) == 0 || rest[0] != '"' {
			continue
		}
		rest = rest[1:]
		end := bytes.IndexByte(rest, '"')
		if end < 0 {
			return nil
		}
		return rest[:end]
	}
}

func skipSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\n' || b[0] == '\r') {
		b = b[1:]
	}
	return b
}
