package loadtest

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/flux-order/flux-order/internal/flagerr"
)

// Scenario is what the buyers of a load test try to buy.
type Scenario string

// The scenarios. Mixed is, per 10 requests in sequence: 5 on a random seat
// (sell-out), 3 on the hot seat, 2 on any free seat (any-seat) — a sale where
// most buyers pick a seat while one popular seat is stormed.
const (
	HotSeat Scenario = "hot-seat" // every request on one seat
	SellOut Scenario = "sell-out" // every seat of Seats once per round, in a scrambled order
	AnySeat Scenario = "any-seat" // POST /v1/purchase, the server picks
	Mixed   Scenario = "mixed"
	// Queue: buyers join the waiting room, poll it as Retry-After says and
	// buy any seat with their pass (queue.go).
	Queue Scenario = "queue"
	// HoldConfirm: buyers hold a seat (sell-out's walk), think, then confirm
	// or abandon the hold (holds.go).
	HoldConfirm Scenario = "hold-confirm"
)

// Scenarios lists every scenario, in the order help texts show them.
var Scenarios = []Scenario{HotSeat, SellOut, AnySeat, Mixed, Queue, HoldConfirm}

// Defaults of the command line; Run applies the concurrency ones to a zero
// Concurrency.
const (
	DefaultClosedConcurrency = 10
	DefaultOpenConcurrency   = 256
	DefaultBuyers            = 1000
	DefaultTimeout           = 10 * time.Second
)

// Config is one load test. A zero Concurrency means the default of the
// model (DefaultClosedConcurrency or DefaultOpenConcurrency); a zero Seats
// means "read tickets from GET /v1/availability".
type Config struct {
	URL      string // base URL of a purchase API: http(s)://host[:port][/prefix]
	Host     string // Host header (and TLS server name) instead of the URL's host
	Scenario Scenario
	Seat     int64 // the hot seat (hot-seat, mixed)
	Seats    int64 // seats 1..Seats to pick from (sell-out, mixed)
	Buyers   int   // distinct buyer ids buyer-1..buyer-N

	// Closed model (Rate 0): Concurrency workers, each sending its next
	// request when the previous one is answered. Open model (Rate > 0):
	// Rate requests/s on a clock, at most Concurrency in flight; a request
	// sent late because every connection was waiting for the server counts
	// its latency from its scheduled time, so a slow server cannot hide its
	// queueing by slowing the client down (coordinated omission).
	Concurrency int
	Rate        float64

	// Bounds: the test stops at whichever comes first; one is required.
	Duration time.Duration
	Requests int64
	// UntilSoldOut also stops once the sale reports sold out.
	UntilSoldOut bool

	Timeout time.Duration // one request, dial included

	// Progress, when set, is called every ProgressEvery with the counts so
	// far, and once more at the end with Done set.
	Progress      func(Snapshot)
	ProgressEvery time.Duration

	// TLS is the client config for https targets (nil: system roots).
	TLS *tls.Config

	// The hold-confirm scenario: after a hold, a buyer thinks ThinkTime,
	// then confirms with probability ConfirmShare; an abandoning buyer
	// releases the hold with probability ReleaseShare, or lets it expire.
	ThinkTime    time.Duration
	ConfirmShare float64
	ReleaseShare float64

	// Keyless sends purchases without an Idempotency-Key and retries
	// nothing. By default every purchase carries its own key, and one
	// whose outcome is in doubt (no answer, 502/503/504, or ticket_locked
	// by its own earlier attempt) is retried with the same key until it
	// is known, as a careful buyer does, so that an audit can be exact
	// after an outage.
	Keyless bool

	// QueueHolds makes the queue scenario's admitted buyers check out
	// through a hold (POST /v1/holds, ThinkTime, confirm) instead of a
	// one-step purchase.
	QueueHolds bool

	// Tokens, when set, signs each buyer's identity token for a sale with
	// buyer identity (spec.buyerAuth): every request then carries
	// Authorization: Bearer <buyer's token>, and the waiting room's pass
	// goes in Flux-Order-Pass.
	Tokens *Tokens
}

// FieldError is a bad value; Flag names the command-line flag.
type FieldError = flagerr.Error

// Validate returns the first bad value as a *FieldError.
func (c *Config) Validate() error {
	bad := flagerr.New
	if _, err := parseTarget(c.URL, c.Host); err != nil {
		return err
	}
	switch {
	case !validScenario(c.Scenario):
		return bad("scenario", "%q is not one of %s", c.Scenario, scenarioList())
	case c.Seat < 1:
		return bad("seat", "must be 1 or more, got %d", c.Seat)
	case c.Seats < 0:
		return bad("seats", "must be 0 (read from /v1/availability) or more, got %d", c.Seats)
	case c.Buyers < 1:
		return bad("buyers", "must be 1 or more, got %d", c.Buyers)
	case c.Concurrency < 0:
		return bad("concurrency", "must be 1 or more, got %d", c.Concurrency)
	case c.Rate < 0:
		return bad("rate", "must be 0 (closed model) or more requests/s, got %g", c.Rate)
	case c.Duration < 0:
		return bad("duration", "must not be negative, got %v", c.Duration)
	case c.Requests < 0:
		return bad("requests", "must not be negative, got %d", c.Requests)
	case c.Duration == 0 && c.Requests == 0:
		return bad("duration", "is required, or --requests: a test must stop by itself")
	case c.Scenario == Queue && c.Duration == 0:
		return bad("duration", "is required with --scenario queue (it bounds the buyers' wait)")
	case c.Scenario == HoldConfirm && c.Rate > 0:
		return bad("rate", "is not supported with --scenario hold-confirm (each buyer's checkout paces itself: use --concurrency)")
	case c.QueueHolds && c.Scenario != Queue:
		return bad("queue-holds", "needs --scenario queue")
	case c.ThinkTime < 0:
		return bad("think-time", "must not be negative, got %v", c.ThinkTime)
	case c.ConfirmShare < 0 || c.ConfirmShare > 1:
		return bad("confirm-share", "must be between 0 and 1, got %g", c.ConfirmShare)
	case c.ReleaseShare < 0 || c.ReleaseShare > 1:
		return bad("release-share", "must be between 0 and 1, got %g", c.ReleaseShare)
	case c.UntilSoldOut && c.Scenario == HotSeat:
		return bad("until-sold-out", "needs --scenario sell-out, any-seat or mixed (hot-seat buys one seat)")
	case c.Timeout <= 0:
		return bad("timeout", "must be positive, got %v", c.Timeout)
	}
	return nil
}

func validScenario(s Scenario) bool {
	for _, v := range Scenarios {
		if s == v {
			return true
		}
	}
	return false
}

func scenarioList() string {
	names := make([]string, len(Scenarios))
	for i, s := range Scenarios {
		names[i] = string(s)
	}
	return strings.Join(names, ", ")
}

// withDefaults fills the zero values that have a default.
func (c Config) withDefaults() Config {
	if c.Concurrency == 0 {
		c.Concurrency = DefaultClosedConcurrency
		if c.Rate > 0 {
			c.Concurrency = DefaultOpenConcurrency
		}
	}
	if c.Progress != nil && c.ProgressEvery <= 0 {
		c.ProgressEvery = time.Second
	}
	return c
}

// target is where requests go: addr is dialled, host is sent.
type target struct {
	base   string // the URL as given, without a trailing slash
	scheme string
	addr   string // host:port to dial
	host   string // Host header
	prefix string // path prefix, without a trailing slash
}

func parseTarget(raw, hostOverride string) (target, error) {
	bad := func(flag, format string, a ...any) (target, error) {
		return target{}, &FieldError{Flag: flag, Msg: fmt.Sprintf(format, a...)}
	}
	if raw == "" {
		return bad("url", "is required (base URL of a purchase API, like http://127.0.0.1:8080)")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return bad("url", "%q is not a URL", raw)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return bad("url", "%q must start with http:// or https://", raw)
	}
	if u.Host == "" || u.Hostname() == "" {
		return bad("url", "%q has no host", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return bad("url", "%q must be a base URL without user, query or fragment", raw)
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	t := target{
		base:   strings.TrimRight(raw, "/"),
		scheme: u.Scheme,
		addr:   net.JoinHostPort(u.Hostname(), port),
		host:   u.Host,
		prefix: strings.TrimRight(u.EscapedPath(), "/"),
	}
	if hostOverride != "" {
		// The value goes verbatim into every request's header block.
		if strings.ContainsFunc(hostOverride, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return bad("host", "%q must not contain spaces or control characters", hostOverride)
		}
		t.host = hostOverride
	}
	return t, nil
}

// serverName is the TLS server name: the Host header without a port.
func (t target) serverName() string {
	if h, _, err := net.SplitHostPort(t.host); err == nil {
		return h
	}
	return t.host
}
