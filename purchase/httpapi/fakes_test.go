package httpapi

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flux-order/flux-order/purchase/checkout"
	"github.com/flux-order/flux-order/purchase/sale"
	"github.com/flux-order/flux-order/purchase/waitingroom"
)

// fakeCheckout answers every call with err (or a fixed order, hold and
// state) and records what it was asked.
type fakeCheckout struct {
	mu       sync.Mutex
	err      error
	calls    int
	purchase checkout.Request
	hold     checkout.HoldRequest
	confirm  [2]string // buyer, paymentRef
	cancel   [2]string // cancelledBy, reason
	replayed bool      // Cancel answers a repeat
}

var (
	fakeOrder = checkout.Order{ID: uuid.MustParse("01900000-0000-7000-8000-000000000001"), TicketID: 1, BuyerID: "alice"}
	fakeHold  = checkout.Hold{ID: uuid.MustParse("00000000-0000-4000-8000-000000000002"), TicketID: 2, BuyerID: "alice"}
)

// called counts a call and returns the error every call answers.
func (f *fakeCheckout) called() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return f.err
}

func (f *fakeCheckout) Purchase(_ context.Context, req checkout.Request) (checkout.Order, bool, error) {
	f.mu.Lock()
	f.purchase = req
	f.mu.Unlock()
	if err := f.called(); err != nil {
		return checkout.Order{}, false, err
	}
	if req.Refusal != nil {
		return checkout.Order{}, false, req.Refusal
	}
	return fakeOrder, req.IdempotencyKey == "replay", nil
}

func (f *fakeCheckout) PlaceHold(_ context.Context, req checkout.HoldRequest) (checkout.Hold, bool, error) {
	f.mu.Lock()
	f.hold = req
	f.mu.Unlock()
	if err := f.called(); err != nil {
		return checkout.Hold{}, false, err
	}
	if req.Refusal != nil {
		return checkout.Hold{}, false, req.Refusal
	}
	return fakeHold, false, nil
}

func (f *fakeCheckout) ConfirmHold(_ context.Context, _ uuid.UUID, buyer, ref string) (checkout.Order, bool, error) {
	f.mu.Lock()
	f.confirm = [2]string{buyer, ref}
	f.mu.Unlock()
	err := f.called()
	return fakeOrder, false, err
}

func (f *fakeCheckout) ReleaseHold(context.Context, uuid.UUID) error {
	err := f.called()
	return err
}

func (f *fakeCheckout) Hold(context.Context, uuid.UUID) (checkout.Hold, error) {
	err := f.called()
	return fakeHold, err
}

func (f *fakeCheckout) Ticket(context.Context, int64) (checkout.TicketStatus, error) {
	err := f.called()
	return checkout.TicketAvailable, err
}

func (f *fakeCheckout) Availability(context.Context) (checkout.Availability, error) {
	err := f.called()
	return checkout.Availability{Tickets: 10, Sold: 1, Available: 9}, err
}

func (f *fakeCheckout) Order(context.Context, uuid.UUID) (checkout.Order, error) {
	err := f.called()
	return fakeOrder, err
}

func (f *fakeCheckout) Cancel(_ context.Context, id uuid.UUID, by, reason string) (checkout.Cancellation, bool, error) {
	f.mu.Lock()
	f.cancel = [2]string{by, reason}
	f.mu.Unlock()
	if err := f.called(); err != nil {
		return checkout.Cancellation{}, false, err
	}
	return checkout.Cancellation{OrderID: id, TicketID: 1, BuyerID: "alice", CancelledBy: by, Reason: reason}, !f.replayed, nil
}

// fakeQueue is a waiting room that answers place (or err), and refuses
// passes with passErr.
type fakeQueue struct {
	on       bool
	passErr  error
	place    waitingroom.Place
	err      error
	joined   string
	left     string
	leftAs   string
	proof    string
	proofErr error
	// passChecked records the last pass check: which header it read
	// ("Authorization" or PassHeader), its values and the buyer.
	passChecked struct {
		header string
		values []string
		buyer  string
	}
}

func (q *fakeQueue) On() bool { return q.on }
func (q *fakeQueue) CheckPass(values []string, buyer string) error {
	q.passChecked.header, q.passChecked.values, q.passChecked.buyer = "Authorization", values, buyer
	return q.passErr
}
func (q *fakeQueue) CheckPassHeader(values []string, buyer string) error {
	q.passChecked.header, q.passChecked.values, q.passChecked.buyer = PassHeader, values, buyer
	return q.passErr
}
func (q *fakeQueue) Join(_ context.Context, buyer string) (waitingroom.Place, string, error) {
	q.joined = buyer
	return q.place, "qid-" + buyer, q.err
}
func (q *fakeQueue) Poll(string) (waitingroom.Place, error) { return q.place, q.err }
func (q *fakeQueue) CheckProof(_ context.Context, _, proof string) error {
	q.proof = proof
	return q.proofErr
}
func (q *fakeQueue) Leave(_ context.Context, id, buyer string) error {
	q.left, q.leftAs = id, buyer
	return q.err
}

// fakeFeed streams one event, or refuses with err.
type fakeFeed struct{ err error }

func (f fakeFeed) Stream(w http.ResponseWriter, _ *http.Request) error {
	if f.err != nil {
		return f.err
	}
	w.Header().Set("Content-Type", "text/event-stream")
	_, _ = io.WriteString(w, "event: test\ndata: {}\n\n")
	return nil
}

// fakeDoor refuses joins with joinErr and streams with streamErr, and
// counts the streams open.
type fakeDoor struct {
	joinErr, streamErr error
	open               int
}

func (d *fakeDoor) OpenStream(*http.Request) (func(), error) {
	if d.streamErr != nil {
		return nil, d.streamErr
	}
	d.open++
	return func() { d.open-- }, nil
}
func (d *fakeDoor) Join(*http.Request) error { return d.joinErr }

// fixture is an API over fakes, served in-process.
type fixture struct {
	checkout *fakeCheckout
	queue    *fakeQueue
	feed     *fakeFeed
	door     *fakeDoor
	draining bool
	warming  bool
	registry *prometheus.Registry
	handler  http.Handler
	admin    http.Handler // the admin API (private port)
}

const fixtureAdminToken = "admin-token-of-the-fixture-0123456789abcdef"

// fakeIdentity accepts the tokens of subs (token → subject); with on
// false, identity is off.
type fakeIdentity struct {
	on   bool
	subs map[string]string
}

func (i *fakeIdentity) On() bool { return i.on }
func (i *fakeIdentity) Subject(authorization []string) (string, error) {
	if len(authorization) == 0 {
		return "", sale.ErrAuthRequired
	}
	tok, ok := strings.CutPrefix(authorization[0], "Bearer ")
	if !ok {
		return "", sale.ErrAuthRequired
	}
	if sub, ok := i.subs[tok]; ok && len(authorization) == 1 {
		return sub, nil
	}
	return "", fmt.Errorf("%w: unknown token", sale.ErrAuthInvalid)
}

func newFixture() *fixture {
	return newFixtureWith(nil)
}

// newFixtureWith is newFixture with buyer identity (nil: none).
func newFixtureWith(identity Identity) *fixture {
	f := &fixture{checkout: &fakeCheckout{}, queue: &fakeQueue{}, feed: &fakeFeed{}, door: &fakeDoor{}, registry: prometheus.NewRegistry()}
	api := New(Deps{
		Checkout: f.checkout, Queue: f.queue, Feed: f.feed, Identity: identity, Door: f.door,
		Facts:      func() sale.Facts { return sale.Facts{DisplayName: "Show", Tickets: 10} },
		Draining:   func() bool { return f.draining },
		Warming:    func() bool { return f.warming },
		AdminToken: fixtureAdminToken,
		Registerer: f.registry,
		Log:        slog.New(slog.DiscardHandler),
	})
	f.handler = api.Handler()
	f.admin = api.AdminHandler()
	return f
}

// do serves one request and returns the recorded answer.
func (f *fixture) do(method, path, body string, header map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	f.handler.ServeHTTP(rec, req)
	return rec
}
