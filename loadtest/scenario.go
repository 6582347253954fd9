package loadtest

import (
	"encoding/hex"
	"math/rand/v2"
	"strconv"

	"github.com/google/uuid"
)

// requestBuilder appends the bytes of one request of the purchase or
// checkout flows; everything but the seat, hold, buyer and key numbers is
// built once.
type requestBuilder struct {
	ticketHead  []byte // "POST <prefix>/v1/tickets/"
	ticketTail  []byte // "/purchase HTTP/1.1\r\n" + headers
	anyHead     []byte // "POST <prefix>/v1/purchase HTTP/1.1\r\n" + headers
	holdTail    []byte // "/hold HTTP/1.1\r\n" + headers
	holdsHead   []byte // "POST <prefix>/v1/holds/"
	confirmTail []byte // "/confirm HTTP/1.1\r\n" + headers
	releaseHead []byte // "DELETE <prefix>/v1/holds/"
	releaseTail []byte // " HTTP/1.1\r\n" + headers without Content-Type
	keyHead     []byte // "Idempotency-Key: lt-<run>-" ("": keyless)
	tokens      *Tokens
}

const (
	bodyHead = `{"buyerId":"buyer-`
	bodyTail = `"}`
	refHead  = `","paymentRef":"lt-` // a confirmation's payment reference, after the buyer
)

// newRequestBuilder builds requests for t; a non-empty run names this
// test's Idempotency-Keys (lt-<run>-<request number>), so that no two runs
// on one sale share a key.
func newRequestBuilder(t target, run string, tokens *Tokens) *requestBuilder {
	bare := "Host: " + t.host + "\r\n" +
		"User-Agent: flux-order-loadtest\r\n"
	headers := bare + "Content-Type: application/json\r\n"
	b := &requestBuilder{
		ticketHead:  []byte("POST " + t.prefix + "/v1/tickets/"),
		ticketTail:  []byte("/purchase HTTP/1.1\r\n" + headers),
		anyHead:     []byte("POST " + t.prefix + "/v1/purchase HTTP/1.1\r\n" + headers),
		holdTail:    []byte("/hold HTTP/1.1\r\n" + headers),
		holdsHead:   []byte("POST " + t.prefix + "/v1/holds/"),
		confirmTail: []byte("/confirm HTTP/1.1\r\n" + headers),
		releaseHead: []byte("DELETE " + t.prefix + "/v1/holds/"),
		releaseTail: []byte(" HTTP/1.1\r\n" + bare),
		tokens:      tokens,
	}
	if run != "" {
		b.keyHead = []byte("Idempotency-Key: lt-" + run + "-")
	}
	return b
}

// appendRequest appends purchase number k, of seat (0: any free seat) by
// buyer-<buyer>, to dst; with a key unless the builder is keyless.
func (b *requestBuilder) appendRequest(dst []byte, k, seat, buyer int64) []byte {
	if seat == 0 {
		dst = append(dst, b.anyHead...)
	} else {
		dst = append(dst, b.ticketHead...)
		dst = strconv.AppendInt(dst, seat, 10)
		dst = append(dst, b.ticketTail...)
	}
	dst = b.appendAuth(dst, buyer)
	if b.keyHead != nil {
		dst = append(dst, b.keyHead...)
		dst = strconv.AppendInt(dst, k, 10)
		dst = append(dst, "\r\n"...)
	}
	return appendBody(dst, buyer, -1)
}

// appendHold appends buyer-<buyer>'s hold of seat: POST
// /v1/tickets/{seat}/hold, without an Idempotency-Key (the hold-confirm
// scenario retries none of its requests).
func (b *requestBuilder) appendHold(dst []byte, seat, buyer int64) []byte {
	dst = append(dst, b.ticketHead...)
	dst = strconv.AppendInt(dst, seat, 10)
	dst = append(dst, b.holdTail...)
	return appendBody(b.appendAuth(dst, buyer), buyer, -1)
}

// appendConfirm appends buyer-<buyer>'s confirmation of hold, paid with
// reference lt-<k>: POST /v1/holds/{id}/confirm.
func (b *requestBuilder) appendConfirm(dst []byte, hold uuid.UUID, buyer, k int64) []byte {
	dst = append(dst, b.holdsHead...)
	dst = appendUUID(dst, hold)
	dst = append(dst, b.confirmTail...)
	return appendBody(b.appendAuth(dst, buyer), buyer, k)
}

// appendRelease appends buyer-<buyer>'s release of hold: DELETE
// /v1/holds/{id}, without a body.
func (b *requestBuilder) appendRelease(dst []byte, hold uuid.UUID, buyer int64) []byte {
	dst = append(dst, b.releaseHead...)
	dst = appendUUID(dst, hold)
	dst = append(dst, b.releaseTail...)
	return append(b.appendAuth(dst, buyer), "\r\n"...)
}

// appendAuth appends buyer-<buyer>'s Authorization header (a sale with
// buyer identity), or nothing.
func (b *requestBuilder) appendAuth(dst []byte, buyer int64) []byte {
	if tok := b.tokens.For(buyer); tok != "" {
		dst = append(dst, "Authorization: Bearer "...)
		dst = append(dst, tok...)
		dst = append(dst, "\r\n"...)
	}
	return dst
}

// appendBody ends the headers with the Content-Length of
// {"buyerId":"buyer-<buyer>"} (with "paymentRef":"lt-<ref>" when ref >= 0)
// and appends that body.
func appendBody(dst []byte, buyer, ref int64) []byte {
	n := len(bodyHead) + digits(buyer) + len(bodyTail)
	if ref >= 0 {
		n += len(refHead) + digits(ref)
	}
	dst = append(dst, "Content-Length: "...)
	dst = strconv.AppendInt(dst, int64(n), 10)
	dst = append(dst, "\r\n\r\n"+bodyHead...)
	dst = strconv.AppendInt(dst, buyer, 10)
	if ref >= 0 {
		dst = append(dst, refHead...)
		dst = strconv.AppendInt(dst, ref, 10)
	}
	return append(dst, bodyTail...)
}

// appendUUID appends u in its canonical form without allocating (as
// uuid.UUID.String would).
func appendUUID(dst []byte, u uuid.UUID) []byte {
	n := len(dst)
	dst = append(dst, "00000000-0000-0000-0000-000000000000"...)
	s := dst[n:]
	hex.Encode(s[0:8], u[0:4])
	hex.Encode(s[9:13], u[4:6])
	hex.Encode(s[14:18], u[6:8])
	hex.Encode(s[19:23], u[8:10])
	hex.Encode(s[24:36], u[10:16])
	return dst
}

func digits(n int64) int {
	d := 1
	for n >= 10 {
		n /= 10
		d++
	}
	return d
}

// picker decides the k-th request of a scenario: a seat (0 for any-seat)
// and a buyer. Buyers take turns, so every one of them buys.
type picker struct {
	scenario Scenario
	seat     int64 // hot seat
	seats    int64
	buyers   int64
	stride   int64 // sell-out's walk: coprime with seats (see newPicker)
}

// newPicker returns the picker of cfg. Sell-out walks the seats in a
// scrambled order, every seat once per round (k·stride mod seats, stride
// coprime with seats), as buyers pick among the seats shown available:
// random picks would need about seats·ln(seats) requests to find the last
// free seats, and that tail, not the server, would set the orders/s.
func newPicker(cfg Config) picker {
	p := picker{scenario: cfg.Scenario, seat: cfg.Seat, seats: cfg.Seats, buyers: int64(cfg.Buyers), stride: 1}
	if p.seats > 2 {
		p.stride = p.seats*618/1000 + 1 // a far jump, golden-ratio-like
		for gcd(p.stride, p.seats) != 1 {
			p.stride++
		}
	}
	return p
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func (p picker) pick(k int64, rng *rand.Rand) (seat, buyer int64) {
	buyer = k%p.buyers + 1
	switch p.scenario {
	case HotSeat:
		return p.seat, buyer
	case SellOut, HoldConfirm:
		return 1 + (k%p.seats)*p.stride%p.seats, buyer
	case AnySeat:
		return 0, buyer
	}
	// Mixed: 5 in 10 on a random seat, 3 on the hot seat, 2 on any seat.
	switch k % 10 {
	case 0, 2, 4, 6, 8:
		return 1 + rng.Int64N(p.seats), buyer
	case 1, 5, 9:
		return p.seat, buyer
	}
	return 0, buyer
}
