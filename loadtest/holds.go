package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// The hold-confirm scenario: Concurrency buyers, each in turn holding a
// seat (sell-out's walk: POST /v1/tickets/{id}/hold), thinking ThinkTime,
// then confirming with probability ConfirmShare (POST .../confirm with a
// payment reference), else abandoning: releasing the hold (DELETE) with
// probability ReleaseShare, or letting it expire. Each buyer keeps one
// connection of the engine's own HTTP/1.1 client (h1.go), as the sell-out's
// workers do: net/http would cost about three times the client CPU per
// request, taken from the server under test when they share a machine. The
// summary's outcomes and latency are the confirmations; HoldSummary tells
// the rest.

// HoldSummary is the checkouts as the hold-confirm scenario's buyers lived
// them.
type HoldSummary struct {
	ThinkTimeMs  float64 `json:"thinkTimeMs"`
	ConfirmShare float64 `json:"confirmShare"`
	ReleaseShare float64 `json:"releaseShare"`
	Attempts     int64   `json:"attempts"` // hold requests
	Held         int64   `json:"held"`     // answered 201
	// Refused counts the other answers to a hold by problem code
	// (ticket_held, ticket_sold, buyer_limit_reached...), "5xx" or
	// "transport_error".
	Refused        map[string]int64 `json:"refused"`
	Confirmed      int64            `json:"confirmed"`      // confirm answered 201
	ConfirmExpired int64            `json:"confirmExpired"` // confirm answered 410 hold_expired
	Released       int64            `json:"released"`       // DELETE answered 204
	LetExpire      int64            `json:"letExpire"`      // abandoned without a release
	Errors         int64            `json:"errors"`         // a confirm or release answered otherwise
	HoldLatency    OutcomeSummary   `json:"holdLatency"`    // of the 201 holds
}

type holdRun struct {
	e    *engine
	held histogram
	n    struct{ attempts, held, confirmed, expired, released, letExpire, errors atomic.Int64 }

	mu      sync.Mutex
	refused map[string]int64
	created []Order
}

// holdBuyer is one of the scenario's buyers, checking out one seat after
// another on its own keep-alive connection.
type holdBuyer struct {
	h   *holdRun
	rng *rand.Rand
	link
}

func runHolds(e *engine) (*Result, error) {
	h := &holdRun{e: e, refused: map[string]int64{}}
	cpu0 := cpuTime()
	e.start = time.Now()
	if e.cfg.Duration > 0 {
		timer := time.AfterFunc(e.cfg.Duration, func() { e.halt(stopDuration) })
		defer timer.Stop()
	}
	defer context.AfterFunc(e.ctx, func() { e.halt(stopInterrupted) })()
	var helpers sync.WaitGroup
	helpersDone := make(chan struct{})
	if e.cfg.UntilSoldOut {
		helpers.Go(func() { e.watchSoldOut(helpersDone) })
	}
	if e.cfg.Progress != nil {
		helpers.Go(func() { e.report(helpersDone) })
	}
	var wg sync.WaitGroup
	for i := range e.cfg.Concurrency {
		b := &holdBuyer{h: h, rng: rand.New(rand.NewPCG(uint64(e.start.UnixNano()), uint64(i))),
			link: link{req: make([]byte, 0, 512), body: make([]byte, 0, 1024)}}
		wg.Go(func() {
			defer b.drop()
			for k, ok := e.next(); ok; k, ok = e.next() {
				b.checkout(k)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(e.start)
	close(helpersDone)
	helpers.Wait()
	if e.cfg.Requests > 0 && e.seq.Load() >= e.cfg.Requests {
		e.halt(stopRequests)
	}
	e.halt(stopDuration)
	if e.cfg.Progress != nil {
		e.cfg.Progress(e.snapshot(true))
	}
	s := e.summary(elapsed, cpuTime()-cpu0)
	s.Holds = h.summary(elapsed)
	return &Result{Summary: s, Created: h.created}, nil
}

// checkout is one buyer's hold, think and decision.
func (b *holdBuyer) checkout(k int64) {
	h, e := b.h, b.h.e
	seat, buyer := e.pick.pick(k, b.rng)
	start := time.Now()
	b.req = e.build.appendHold(b.req[:0], seat, buyer)
	status, raw, err := b.send()
	h.n.attempts.Add(1)
	var hold struct {
		HoldID uuid.UUID `json:"holdId"`
	}
	if err != nil || status != http.StatusCreated || json.Unmarshal(raw, &hold) != nil {
		h.refuse(status, raw, err)
		return
	}
	h.held.record(time.Since(start))
	h.n.held.Add(1)
	if !e.pause(e.cfg.ThinkTime) {
		h.n.letExpire.Add(1) // the test ended while the buyer thought
		return
	}
	switch {
	case b.rng.Float64() < e.cfg.ConfirmShare:
		start := time.Now()
		b.req = e.build.appendConfirm(b.req[:0], hold.HoldID, buyer, k)
		status, raw, err := b.send()
		o := TransportError
		if err == nil {
			o = Classify(status, raw)
		}
		e.stats[o].record(time.Since(start))
		switch {
		case o == Created:
			h.n.confirmed.Add(1)
			h.mu.Lock()
			h.created = append(h.created, decodeOrder(raw))
			h.mu.Unlock()
		case status == http.StatusGone:
			h.n.expired.Add(1) // thought longer than the hold lasts
		default:
			h.n.errors.Add(1)
			e.example(o, status, raw, err)
		}
	case b.rng.Float64() < e.cfg.ReleaseShare:
		b.req = e.build.appendRelease(b.req[:0], hold.HoldID, buyer)
		if status, _, err := b.send(); err != nil || status != http.StatusNoContent {
			h.n.errors.Add(1)
			return
		}
		h.n.released.Add(1)
	default:
		h.n.letExpire.Add(1)
	}
}

// send sends b.req. A request under way when the test is interrupted still
// gets its answer (within Timeout, even if it must dial), so the counts and
// the audit agree; the status is 0 after an error.
func (b *holdBuyer) send() (int, []byte, error) {
	status, body, err := b.roundTrip(context.WithoutCancel(b.h.e.ctx), b.h.e)
	if err != nil {
		return 0, body, err
	}
	return status, body, nil
}

// refuse counts a hold that was not placed, by its problem code.
func (h *holdRun) refuse(status int, raw []byte, err error) {
	key := "transport_error"
	switch {
	case err != nil:
	case status >= 500:
		key = "5xx"
	case problemCode(raw) != nil:
		key = string(problemCode(raw))
	default:
		key = strconv.Itoa(status)
	}
	h.mu.Lock()
	h.refused[key]++
	h.mu.Unlock()
}

func (h *holdRun) summary(elapsed time.Duration) *HoldSummary {
	c := h.e.cfg
	s := &HoldSummary{
		ThinkTimeMs: ms(c.ThinkTime), ConfirmShare: c.ConfirmShare, ReleaseShare: c.ReleaseShare,
		Attempts: h.n.attempts.Load(), Held: h.n.held.Load(), Refused: h.refused,
		Confirmed: h.n.confirmed.Load(), ConfirmExpired: h.n.expired.Load(), Released: h.n.released.Load(),
		LetExpire: h.n.letExpire.Load(), Errors: h.n.errors.Load(),
	}
	s.HoldLatency = summarize(&h.held, s.Held, elapsed)
	return s
}

func (s *HoldSummary) text() string {
	codes := make([]string, 0, len(s.Refused))
	for code := range s.Refused {
		codes = append(codes, code)
	}
	sort.Strings(codes)
	refused := make([]string, len(codes))
	for i, code := range codes {
		refused[i] = fmt.Sprintf("%s %s", thousands(s.Refused[code]), code)
	}
	return fmt.Sprintf("  holds       %s attempts: %s held (p50 %s p99 %s), refused: %s\n"+
		"              think %s; %s confirmed, %s confirmed too late (410), %s released, %s left to expire, %s errors\n",
		thousands(s.Attempts), thousands(s.Held), fmtMs(s.HoldLatency.P50Ms), fmtMs(s.HoldLatency.P99Ms),
		strings.Join(refused, ", "), fmtMs(s.ThinkTimeMs), thousands(s.Confirmed), thousands(s.ConfirmExpired),
		thousands(s.Released), thousands(s.LetExpire), thousands(s.Errors))
}
