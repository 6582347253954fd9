package purchasetest

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase"
)

// Running is a pod of the sale served by purchase.Serve on its own free
// port, as the binary serves it: SIGTERM starts its drain, and Served
// yields Serve's result.
type Running struct {
	Svc     *purchase.Service
	Cfg     purchase.Config // Cfg.Listen is its address
	URL     string
	SIGTERM func()
	Served  <-chan error
}

// Run starts one more pod on the sale's config, edited by edit (when not
// nil), and serves it until SIGTERM. prepare (when not nil) runs on the
// started pod before it serves. Run returns once /healthz answers.
func (s *Sale) Run(edit func(*purchase.Config), prepare func(*purchase.Service)) *Running {
	s.T.Helper()
	port, err := testservers.FreePort()
	if err != nil {
		s.T.Fatal(err)
	}
	cfg := s.Cfg
	cfg.Listen = fmt.Sprintf("127.0.0.1:%d", port)
	if edit != nil {
		edit(&cfg)
	}
	svc, closeAll, err := purchase.Start(context.Background(), cfg, Discard())
	if err != nil {
		s.T.Fatal(err)
	}
	s.T.Cleanup(closeAll)
	if prepare != nil {
		prepare(svc)
	}
	ctx, sigterm := context.WithCancel(context.Background())
	s.T.Cleanup(sigterm)
	served := make(chan error, 1)
	go func() { served <- purchase.Serve(ctx, svc, Discard()) }()
	r := &Running{Svc: svc, Cfg: cfg, URL: "http://" + cfg.Listen, SIGTERM: sigterm, Served: served}
	testservers.Eventually(s.T, 5*time.Second, 20*time.Millisecond, r.URL+" to come up", func() error {
		resp, err := http.Get(r.URL + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err
	})
	return r
}
