package httpapi

import (
	"errors"
	"net/http"
	"time"

	"github.com/flux-order/flux-order/purchase/page"
	"github.com/flux-order/flux-order/purchase/sale"
	"github.com/flux-order/flux-order/purchase/seatfeed"
)

// SaleBody is GET /v1/sale: the facts and the server's clock, so that
// countdowns are right on a buyer's device whose clock is off.
type SaleBody struct {
	sale.Facts
	ServerTime time.Time `json:"serverTime"`
}

// pageRoutes registers the page, its assets, the sale's public facts and
// the seat-change stream.
func (s *API) pageRoutes(mux *http.ServeMux) {
	serve := get(func(w http.ResponseWriter, r *http.Request) {
		if !page.Serve(w, r) {
			writeProblem(w, errNoSuchEndpoint)
		}
	})
	mux.HandleFunc("/{$}", serve)
	mux.HandleFunc("/assets/{name}", serve)
	mux.HandleFunc("/v1/sale", get(s.handleSale))
	mux.HandleFunc("/v1/events", get(s.handleEvents))
}

// streamsFullRetry is the Retry-After of a stream refused at the pod's cap.
const streamsFullRetry = 10

func (s *API) handleEvents(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		release, err := s.door.OpenStream(r)
		if err != nil {
			writeProblem(w, err) // 429 too_many_requests: this client's cap
			return
		}
		defer release()
	}
	switch err := s.feed.Stream(w, r); {
	case errors.Is(err, seatfeed.ErrFull):
		// At the pod's cap: come back later (another pod may have room).
		writeProblem(w, &sale.RetryAfterError{Seconds: streamsFullRetry, Err: sale.ErrUnavailable})
	case err != nil:
		writeProblem(w, sale.ErrUnavailable) // shutting down: the page reconnects elsewhere
	}
}

func (s *API) handleSale(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, SaleBody{Facts: s.facts(), ServerTime: time.Now().UTC()})
}
