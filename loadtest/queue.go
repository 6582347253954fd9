package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flux-order/flux-order/purchase/waitingroom"
)

// The queue scenario: Buyers buyers (buyer-1..buyer-N) join the waiting
// room (at Rate joins/s, or all at once), poll their queue id when
// Retry-After says, and once admitted buy any seat with their pass. A buyer
// stops when they bought, were told sold_out or closed, or the test ended.
// The buyers' flow is stateful and paced by the server, so it runs on
// net/http (Concurrency connections) rather than the hot loop's client.

// QueueSummary is the waiting room as the queue scenario's buyers lived it.
type QueueSummary struct {
	Buyers     int   `json:"buyers"`
	Joined     int64 `json:"joined"`
	Admitted   int64 `json:"admitted"`
	Bought     int64 `json:"bought"`
	SoldOut    int64 `json:"soldOut"`    // told sold_out (by the queue or the purchase)
	Closed     int64 `json:"closed"`     // told closed, or refused the join
	Unfinished int64 `json:"unfinished"` // still waiting when the test stopped
	Joins      int64 `json:"joins"`
	Polls      int64 `json:"polls"`
	Errors     int64 `json:"errors"` // transport errors and 5xx (retried after 1 s)
	// TimeInQueue is from the join's answer to the first answer saying
	// admitted (so it includes up to one Retry-After of polling).
	TimeInQueue OutcomeSummary `json:"timeInQueue"`
	// AdmittedPerSecond is the admitted buyers over the span between the
	// first and the last admission seen.
	AdmittedPerSecond float64 `json:"admittedPerSecond"`
	// FIFOInversions counts pairs where buyer A's join was answered before
	// buyer B's was sent, yet B was seen admitted while A was still seen
	// waiting more than fifoTolerance later (pods' views of the queue may
	// differ by one refresh). 0 is what a FIFO queue must show; a Random
	// queue's prequeue shows many.
	FIFOInversions int64 `json:"fifoInversions"`
	// Solves are the proof-of-work challenges the buyers solved to join
	// (spec.waitingRoom.proofOfWork; 0 when off); SolveHashes the hashes
	// they took, SolveMs the CPU time (one goroutine each).
	Solves      int64   `json:"solves,omitempty"`
	SolveHashes int64   `json:"solveHashes,omitempty"`
	SolveMs     float64 `json:"solveMs,omitempty"`
	// TooMany are joins refused 429 too_many_requests by a per-client cap
	// (retried after Retry-After).
	TooMany int64 `json:"tooManyRequests,omitempty"`
}

// stopBuyersDone: every buyer of the queue scenario finished.
const stopBuyersDone = "buyers-done"

// fifoTolerance covers two pods' views of the queue differing by one
// refresh (200 ms on the server).
const fifoTolerance = 250 * time.Millisecond

// queueBuyer is one buyer's timeline.
type queueBuyer struct {
	joinStart, joinEnd time.Time
	lastWaiting        time.Time // send time of the last poll answered waiting
	admitted           time.Time // receive time of the first answer saying admitted
}

type queueRun struct {
	e       *engine
	c       *http.Client
	buyers  []queueBuyer
	joins   atomic.Int64
	polls   atomic.Int64
	solves  atomic.Int64
	hashes  atomic.Int64
	solveNs atomic.Int64
	tooMany atomic.Int64
	errors  atomic.Int64
	outcome struct{ joined, admitted, bought, soldOut, closed, unfinished atomic.Int64 }
	inQueue histogram
	mu      sync.Mutex
	created []Order
}

func runQueue(ctx context.Context, cfg Config, t target) (*Result, error) {
	api := newAPIClient(t, cfg.TLS, cfg.Timeout)
	tr := api.c.Transport.(*http.Transport)
	tr.MaxConnsPerHost, tr.MaxIdleConnsPerHost = cfg.Concurrency, cfg.Concurrency
	e := &engine{ctx: ctx, cfg: cfg, t: t, api: api, stopCh: make(chan struct{}), open: cfg.Rate > 0}
	q := &queueRun{e: e, c: api.c, buyers: make([]queueBuyer, cfg.Buyers)}
	cpu0 := cpuTime()
	e.start = time.Now()
	if cfg.Duration > 0 {
		timer := time.AfterFunc(cfg.Duration, func() { e.halt(stopDuration) })
		defer timer.Stop()
	}
	defer context.AfterFunc(ctx, func() { e.halt(stopInterrupted) })()
	var wg sync.WaitGroup
	for i := range cfg.Buyers {
		if e.open {
			at := e.start.Add(time.Duration(float64(i) * float64(time.Second) / cfg.Rate))
			if !q.sleep(time.Until(at)) {
				break
			}
		}
		wg.Go(func() { q.buyer(i) })
	}
	wg.Wait()
	e.halt(stopBuyersDone)
	elapsed := time.Since(e.start)
	s := e.summary(elapsed, cpuTime()-cpu0)
	s.Model = "buyers"
	s.Queue = q.summary()
	return &Result{Summary: s, Created: q.created}, nil
}

// sleep waits d, or until the test stops (false).
func (q *queueRun) sleep(d time.Duration) bool { return q.e.pause(d) }

// queueAnswer is what a join or a poll answers.
type queueAnswer struct {
	QueueID string `json:"queueId"`
	State   string `json:"state"`
	Pass    string `json:"pass"`
}

func (q *queueRun) buyer(i int) {
	b := &q.buyers[i]
	body := []byte(`{"buyerId":"buyer-` + strconv.Itoa(i+1) + `"}`)
	var a queueAnswer
	var retry time.Duration
	var proof map[string]string // Flux-Order-Proof of the last challenge solved
	for solves := 0; ; {
		b.joinStart = time.Now()
		status, raw, r, h, err := q.doFull(http.MethodPost, "/v1/queue", body, "", proof)
		q.joins.Add(1)
		b.joinEnd, retry, proof = time.Now(), r, nil
		if err == nil && (status == http.StatusAccepted || status == http.StatusOK) && json.Unmarshal(raw, &a) == nil {
			q.outcome.joined.Add(1)
			break
		}
		if ch := h.Get("Flux-Order-Challenge"); err == nil && status == http.StatusPreconditionRequired && ch != "" && solves < maxSolves {
			// The waiting room asks a proof of work: solve it, as a page does.
			solves++
			proof = map[string]string{"Flux-Order-Proof": q.solve(ch, h.Get("Flux-Order-Difficulty"))}
			continue
		}
		if q.refused(status, raw, err) {
			return
		}
		if !q.sleep(retry) {
			q.outcome.unfinished.Add(1)
			return
		}
	}
	if a.State == "waiting" {
		b.lastWaiting = b.joinStart
	}
	for a.State == "waiting" {
		if !q.sleep(retry) {
			q.outcome.unfinished.Add(1)
			return
		}
		sent := time.Now()
		status, raw, r, err := q.do(http.MethodGet, "/v1/queue/"+a.QueueID, nil, "")
		q.polls.Add(1)
		retry = r
		var next queueAnswer
		if err != nil || status != http.StatusOK || json.Unmarshal(raw, &next) != nil {
			q.errors.Add(1)
			continue
		}
		a.State, a.Pass = next.State, next.Pass
		if a.State == "waiting" {
			b.lastWaiting = sent
		}
	}
	switch a.State {
	case "admitted":
		b.admitted = time.Now()
		q.outcome.admitted.Add(1)
		q.inQueue.record(b.admitted.Sub(b.joinEnd))
		q.buy(i+1, body, a.Pass)
	case "sold_out":
		q.outcome.soldOut.Add(1)
	default:
		q.outcome.closed.Add(1)
	}
}

// maxSolves bounds the challenges one buyer solves in a row (each refusal
// of a proof comes with a fresh one).
const maxSolves = 4

// solve solves a proof-of-work challenge and returns the proof.
func (q *queueRun) solve(challenge, difficulty string) string {
	d, _ := strconv.Atoi(difficulty)
	start := time.Now()
	proof, hashes := waitingroom.Solve(challenge, d)
	q.solveNs.Add(int64(time.Since(start)))
	q.solves.Add(1)
	q.hashes.Add(int64(hashes))
	return proof
}

// refused sorts out a join that did not queue the buyer: final (sold out,
// closed, refused) or to retry.
func (q *queueRun) refused(status int, raw []byte, err error) bool {
	switch {
	case err != nil || status >= 500:
		q.errors.Add(1)
		return false
	case status == http.StatusTooManyRequests: // a per-client cap: after Retry-After
		q.tooMany.Add(1)
		return false
	case status == http.StatusConflict:
		q.outcome.soldOut.Add(1)
		return true
	case status == http.StatusForbidden && string(problemCode(raw)) == "sale_not_started":
		return false
	}
	q.outcome.closed.Add(1)
	return true
}

// buy spends the pass on any seat: one purchase, or a hold and its
// confirmation (QueueHolds). A lost race for a seat is retried, and so is a
// 5xx or a transport error: a purchase carries an Idempotency-Key and a
// confirmation is idempotent, so a retry can never buy the buyer a second
// seat, and an order whose answer was lost is answered again.
func (q *queueRun) buy(buyer int, body []byte, pass string) {
	headers := map[string]string{"Idempotency-Key": "queue-" + strconv.Itoa(buyer)}
	path := "/v1/purchase"
	if q.e.cfg.QueueHolds {
		held, ok := q.hold(body, pass)
		if !ok {
			return
		}
		if !q.sleep(q.e.cfg.ThinkTime) {
			q.outcome.unfinished.Add(1)
			return
		}
		headers, pass, path = nil, "", "/v1/holds/"+held+"/confirm"
		body = []byte(strings.TrimSuffix(string(body), "}") + `,"paymentRef":"queue-` + strconv.Itoa(buyer) + `"}`)
	}
	for range raceTries {
		start := time.Now()
		status, raw, _, err := q.doWith(http.MethodPost, path, body, pass, headers)
		o := TransportError
		if err == nil {
			o = Classify(status, raw)
		}
		q.e.stats[o].record(time.Since(start))
		if o != Created && o != SoldOut {
			q.e.example(o, status, raw, err)
		}
		switch o {
		case Created:
			q.outcome.bought.Add(1)
			q.mu.Lock()
			q.created = append(q.created, decodeOrder(raw))
			q.mu.Unlock()
			return
		case SoldOut:
			q.outcome.soldOut.Add(1)
			return
		case TicketLocked, TicketHeld, ServerError, TransportError:
			if !q.sleep(100 * time.Millisecond) {
				return
			}
			continue
		}
		return
	}
	q.outcome.unfinished.Add(1) // still losing races after every try
}

// raceTries bounds one admitted buyer's attempts at a seat (100 ms apart):
// while every remaining seat is locked or held by buyers still checking
// out, an any-seat purchase or hold is refused 409 until they confirm (sold
// out) or abandon (the seat comes back). That lasts as long as their
// commits: seconds on a loaded cluster, so a buyer keeps trying, as a
// real one would, rather than giving up after a few lost races.
const raceTries = 100

// hold holds any free seat with the pass and returns the hold id; a lost
// race or a 5xx is retried (a hold whose answer was lost only expires).
func (q *queueRun) hold(body []byte, pass string) (string, bool) {
	for range raceTries {
		status, raw, _, err := q.do(http.MethodPost, "/v1/holds", body, pass)
		if err == nil && status == http.StatusCreated {
			var h struct {
				HoldID string `json:"holdId"`
			}
			if json.Unmarshal(raw, &h) == nil && h.HoldID != "" {
				return h.HoldID, true
			}
		}
		o := TransportError
		if err == nil {
			o = Classify(status, raw)
		}
		switch o {
		case SoldOut:
			q.outcome.soldOut.Add(1)
			return "", false
		case TicketLocked, TicketHeld, ServerError, TransportError:
			if !q.sleep(100 * time.Millisecond) {
				q.outcome.unfinished.Add(1)
				return "", false
			}
			continue
		}
		q.e.example(o, status, raw, err)
		q.outcome.closed.Add(1)
		return "", false
	}
	q.outcome.unfinished.Add(1)
	return "", false
}

// do sends one request and returns the status, the body and the
// Retry-After (1 s when absent or unreadable).
func (q *queueRun) do(method, path string, body []byte, pass string) (int, []byte, time.Duration, error) {
	return q.doWith(method, path, body, pass, nil)
}

// doWith is do with extra request headers.
func (q *queueRun) doWith(method, path string, body []byte, pass string, headers map[string]string) (int, []byte, time.Duration, error) {
	status, raw, retry, _, err := q.doFull(method, path, body, pass, headers)
	return status, raw, retry, err
}

// doFull is doWith that also returns the answer's headers (never nil).
func (q *queueRun) doFull(method, path string, body []byte, pass string, headers map[string]string) (int, []byte, time.Duration, http.Header, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(context.WithoutCancel(q.e.ctx), method, q.e.t.base+path, r)
	if err != nil {
		return 0, nil, time.Second, http.Header{}, err
	}
	req.Host = q.e.t.host
	req.Header.Set("User-Agent", "flux-order-loadtest")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	switch tok := q.e.cfg.Tokens.forBody(body); {
	case tok != "":
		// Buyer identity: the token takes Authorization, the pass its own header.
		req.Header.Set("Authorization", "Bearer "+tok)
		if pass != "" {
			req.Header.Set("Flux-Order-Pass", pass)
		}
	case pass != "":
		req.Header.Set("Authorization", "Bearer "+pass)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := q.c.Do(req)
	if err != nil {
		return 0, nil, time.Second, http.Header{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	retry := time.Second
	if n, perr := strconv.Atoi(resp.Header.Get("Retry-After")); perr == nil && n >= 0 {
		retry = time.Duration(n) * time.Second
	}
	return resp.StatusCode, raw, retry, resp.Header, err
}

func (q *queueRun) summary() *QueueSummary {
	s := &QueueSummary{
		Buyers: len(q.buyers), Joined: q.outcome.joined.Load(), Admitted: q.outcome.admitted.Load(),
		Bought: q.outcome.bought.Load(), SoldOut: q.outcome.soldOut.Load(), Closed: q.outcome.closed.Load(),
		Unfinished: q.outcome.unfinished.Load(), Joins: q.joins.Load(), Polls: q.polls.Load(), Errors: q.errors.Load(),
		Solves: q.solves.Load(), SolveHashes: q.hashes.Load(), SolveMs: float64(q.solveNs.Load()) / 1e6, TooMany: q.tooMany.Load(),
	}
	s.TimeInQueue = summarize(&q.inQueue, s.Admitted, time.Since(q.e.start))
	var first, last time.Time
	for _, b := range q.buyers {
		if b.admitted.IsZero() {
			continue
		}
		if first.IsZero() || b.admitted.Before(first) {
			first = b.admitted
		}
		if b.admitted.After(last) {
			last = b.admitted
		}
	}
	if span := last.Sub(first); span > 0 {
		s.AdmittedPerSecond = round(float64(s.Admitted-1)/span.Seconds(), 1)
	}
	s.FIFOInversions = fifoInversions(q.buyers)
	return s
}

// fifoInversions counts the pairs (A, B) with A.joinEnd < B.joinStart and
// B.admitted + fifoTolerance < A.lastWaiting, in O(n log n): B in order of
// joinStart, each A entered into a Fenwick tree (over the ranks of
// lastWaiting) once its joinEnd is before the current B's joinStart.
func fifoInversions(buyers []queueBuyer) int64 {
	var as, bs []queueBuyer
	var waits []int64
	for _, b := range buyers {
		if b.joinEnd.IsZero() {
			continue
		}
		if !b.lastWaiting.IsZero() {
			as = append(as, b)
			waits = append(waits, b.lastWaiting.UnixNano())
		}
		if !b.admitted.IsZero() {
			bs = append(bs, b)
		}
	}
	slices.SortFunc(as, func(x, y queueBuyer) int { return x.joinEnd.Compare(y.joinEnd) })
	slices.SortFunc(bs, func(x, y queueBuyer) int { return x.joinStart.Compare(y.joinStart) })
	slices.Sort(waits)
	tree := make([]int64, len(waits)+1)
	add := func(i int) {
		for i++; i < len(tree); i += i & -i {
			tree[i]++
		}
	}
	upTo := func(i int) (n int64) { // entries with rank < i
		for ; i > 0; i -= i & -i {
			n += tree[i]
		}
		return n
	}
	var inversions, entered int64
	next := 0
	for _, b := range bs {
		for next < len(as) && as[next].joinEnd.Before(b.joinStart) {
			r, _ := slices.BinarySearch(waits, as[next].lastWaiting.UnixNano())
			add(r)
			entered++
			next++
		}
		// Entered buyers seen waiting after b's admission (+ tolerance).
		cut, _ := slices.BinarySearch(waits, b.admitted.Add(fifoTolerance).UnixNano()+1)
		inversions += entered - upTo(cut)
	}
	return inversions
}

func (s *QueueSummary) text() string {
	return fmt.Sprintf("  queue       %d buyers: %d joined, %d admitted, %d bought, %d sold out, %d closed, %d unfinished\n"+
		"              %d joins, %d polls, %d errors; time in queue p50 %s p99 %s max %s; admitted %.1f/s; FIFO inversions %d\n",
		s.Buyers, s.Joined, s.Admitted, s.Bought, s.SoldOut, s.Closed, s.Unfinished,
		s.Joins, s.Polls, s.Errors, fmtMs(s.TimeInQueue.P50Ms), fmtMs(s.TimeInQueue.P99Ms), fmtMs(s.TimeInQueue.MaxMs),
		s.AdmittedPerSecond, s.FIFOInversions) + s.proofText()
}

// proofText is the line of the proofs of work solved, if any.
func (s *QueueSummary) proofText() string {
	out := ""
	if s.Solves > 0 {
		out += fmt.Sprintf("              proof of work: %d challenges solved, %.0f hashes and %.1f ms of CPU each\n",
			s.Solves, float64(s.SolveHashes)/float64(s.Solves), s.SolveMs/float64(s.Solves))
	}
	if s.TooMany > 0 {
		out += fmt.Sprintf("              %d joins refused 429 too_many_requests (per-client cap), retried\n", s.TooMany)
	}
	return out
}
