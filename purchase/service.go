// Package purchase wires one purchase pod: it builds the pod's parts
// (checkout, the waiting room, the seat feed, the HTTP API) over one sale's
// Redis and PostgreSQL, serves them, follows the FlashSale's live settings
// and drains on SIGTERM. docs/architecture.md draws the packages below it.
package purchase

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/flux-order/flux-order/purchase/buyerauth"
	"github.com/flux-order/flux-order/purchase/checkout"
	"github.com/flux-order/flux-order/purchase/delivery"
	"github.com/flux-order/flux-order/purchase/frontdoor"
	"github.com/flux-order/flux-order/purchase/httpapi"
	"github.com/flux-order/flux-order/purchase/orderstore"
	"github.com/flux-order/flux-order/purchase/sale"
	"github.com/flux-order/flux-order/purchase/seatfeed"
	"github.com/flux-order/flux-order/purchase/seatlock"
	"github.com/flux-order/flux-order/purchase/waitingroom"
)

// Service is one purchase pod: its parts, wired over one sale's stores.
type Service struct {
	cfg      Config
	Checkout *checkout.Service
	Queue    *waitingroom.Room
	Feed     *seatfeed.Hub
	// Identity verifies the buyers' identity tokens (spec.buyerAuth).
	Identity *buyerauth.Verifier
	// Delivery hands the sale's events to its webhooks (set by Start;
	// nil in a Service made by NewService alone).
	Delivery *delivery.Deliverer
	Door     *frontdoor.Door
	api      *httpapi.API
	registry *prometheus.Registry
	log      *slog.Logger

	displayName atomic.Pointer[string]
	// draining is set on SIGTERM: /readyz fails so traffic moves away.
	draining atomic.Bool
	// grow takes the latest wish for more seats to followGrowth.
	grow chan int64
}

// NewService returns a pod over an opened store and lock space. Its loops
// (the waiting room's, growth, the JWKS file's) start with Run. A JWKS
// file that cannot be loaded leaves the pod without keys: with identity
// on, it answers buyers 503 until the file is fixed (Start refuses it
// instead).
func NewService(cfg Config, locks *seatlock.Locks, store *orderstore.Store, log *slog.Logger) *Service {
	identity, err := buyerauth.New(cfg.BuyerJWKSFile, cfg.BuyerAuth, log)
	if err != nil {
		log.Error("buyer identity keys not loaded", "err", err)
		identity, _ = buyerauth.New("", cfg.BuyerAuth, log)
		identity.FollowFile(cfg.BuyerJWKSFile)
	}
	return newService(cfg, locks, store, identity, log)
}

func newService(cfg Config, locks *seatlock.Locks, store *orderstore.Store, identity *buyerauth.Verifier, log *slog.Logger) *Service {
	secret := []byte(cfg.SaleSecret)
	s := &Service{cfg: cfg, registry: prometheus.NewRegistry(), log: log, grow: make(chan int64, 1), Identity: identity}
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	locks.Instrument(s.registry)
	store.Instrument(s.registry)
	s.Checkout = checkout.New(checkout.Config{
		Tickets: cfg.Tickets, Schedule: cfg.Schedule, MaxPerBuyer: cfg.MaxPerBuyer,
		LockTTL: cfg.LockTTL, HoldTTL: cfg.HoldTTL, Sale: cfg.Sale, Secret: secret,
	}, locks, store, s.registry, log)
	s.Queue = waitingroom.New(cfg.Sale, secret, cfg.WaitingRoom, store, s.Checkout.Schedule, s.registry, log)
	s.Queue.SetSpender(locks) // proof-of-work challenges are spent once, in Redis
	s.Feed = seatfeed.New(store, s.Checkout.Tickets, s.Facts, cfg.MaxStreams, s.registry, log)
	s.Door = frontdoor.New(cfg.FrontDoor, s.registry)
	s.SetDisplayName(cfg.DisplayName)
	s.api = httpapi.New(httpapi.Deps{
		Checkout: s.Checkout, Queue: s.Queue, Feed: s.Feed, Identity: s.Identity, Door: s.Door, Facts: s.Facts,
		Draining: s.draining.Load, Warming: func() bool { return !s.Queue.Warm() }, AdminToken: cfg.AdminToken, Registerer: s.registry, Log: log,
	})
	return s
}

// Handler is the pod's API (package httpapi).
func (s *Service) Handler() http.Handler { return s.api.Handler() }

// MetricsHandler serves the pod's private port (the metrics listener,
// never routed by the Ingress): the Prometheus metrics, the admin API
// under /admin/ (order cancellation; it needs the admin token), and with
// cfg.Pprof the runtime profiles under /debug/pprof/.
func (s *Service) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	mux.Handle("/admin/", s.api.AdminHandler())
	if !s.cfg.Pprof {
		return mux
	}
	// Importing net/http/pprof also registers these on
	// http.DefaultServeMux, which no listener of this binary serves.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// SetDisplayName changes the event's name on the page ("": the sale's).
func (s *Service) SetDisplayName(name string) {
	if name == "" {
		name = s.cfg.Sale
	}
	s.displayName.Store(&name)
}

// Facts are the sale's public facts as of now, from the live settings.
func (s *Service) Facts() sale.Facts {
	sch := s.Checkout.Schedule()
	f := sale.Facts{
		DisplayName:        *s.displayName.Load(),
		Tickets:            s.Checkout.Tickets(),
		Paused:             sch.Paused,
		MaxTicketsPerBuyer: s.Checkout.MaxPerBuyer(),
		HoldTTL:            s.Checkout.HoldTTL().Seconds(),
	}
	f.StartsAt, f.EndsAt = utcOrNil(sch.StartsAt), utcOrNil(sch.EndsAt)
	if wr := s.Queue.Settings(); wr.On() {
		f.WaitingRoom = sale.WaitingRoomInfo{Enabled: true, JoinFrom: utcOrNil(wr.JoinFrom)}
	}
	return f
}

func utcOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// Run starts the pod's loops: the waiting room's, the one that seeds new
// seats, and the one that applies the sale's cancellations. They end with ctx; wait returns once they have.
func (s *Service) Run(ctx context.Context) (wait func()) {
	queueStopped := s.Queue.Run(ctx)
	done, keysDone := make(chan struct{}), make(chan struct{})
	go func() { defer close(done); s.followGrowth(ctx, s.grow) }()
	go func() { defer close(keysDone); s.Identity.Follow(ctx, buyerauth.FollowInterval) }()
	cancelsDone := make(chan struct{})
	go func() { defer close(cancelsDone); s.Checkout.FollowCancellations(ctx) }()
	delivered := make(chan struct{})
	go func() {
		defer close(delivered)
		if s.Delivery == nil {
			return
		}
		if err := s.Delivery.Run(ctx); err != nil {
			s.log.Error("webhook delivery stopped", "err", err)
		}
	}()
	return func() { queueStopped(); <-done; <-keysDone; <-delivered; <-cancelsDone }
}

// Gatherer is the pod's metrics registry (what MetricsHandler serves).
func (s *Service) Gatherer() prometheus.Gatherer { return s.registry }

// Config is the pod's configuration as started (the live values are the
// parts': Checkout, Queue).
func (s *Service) Config() Config { return s.cfg }
