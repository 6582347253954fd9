//go:build e2e

// Package e2e runs Flux-Order end to end on a real cluster: the operator
// installed by the Helm chart (make kind-up deploy), sales applied with
// kubectl, buyers coming through the Ingress, orders audited in each sale's
// own PostgreSQL through a port-forward.
//
//	make kind-up deploy test-e2e
//
// Every test has its own namespace and sale. Scenario 1 runs alone, so the
// time to OnSale it reports is not inflated by other sales; so does the
// scoped-install scenario, which helm-upgrades the operator to two
// namespaces and back; the others run in parallel, with their load storms
// one at a time (stormMu).
//
// Environment: KUBE_CONTEXT (default kind-flux-order), OPERATOR_NAMESPACE
// (flux-order-system), INGRESS_ADDR (127.0.0.1:18080, where the ingress
// controller's HTTP port is published), E2E_KEEP=1 keeps the test
// namespaces, HELM (bin/helm, else helm on PATH). kubectl and helm must be
// there (make test-e2e sees to it).
package e2e

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

type order struct {
	OrderID  string `json:"orderId"`
	TicketID int64  `json:"ticketId"`
	BuyerID  string `json:"buyerId"`
}

// Scenario 1: a FlashSale with 500 seats, 2 purchase replicas and an
// Ingress reaches OnSale; a buyer buys a seat through the Ingress and the
// sale's status counts it. It runs alone (not in parallel) so the time to
// OnSale is measured on an otherwise idle cluster.
func TestSaleGoesOnSaleAndSellsThroughIngress(t *testing.T) {
	ns := testNamespace(t, "e2e-onsale")
	const name = "concert"

	start := time.Now()
	b := newBuyer(applySale(t, ns, name, 500, 2))
	waitSale(t, ns, name, 5*time.Minute, "OnSale", func(s *salesv1alpha1.FlashSale) bool {
		return s.Status.Phase == salesv1alpha1.PhaseOnSale
	})
	t.Logf("TIMING: flashsale/%s (500 seats, 2 replicas, ingress) OnSale %.1fs after apply", name, time.Since(start).Seconds())

	s := waitSale(t, ns, name, 3*time.Minute, "with 2 ready purchase pods", func(s *salesv1alpha1.FlashSale) bool {
		return s.Status.ReadyReplicas == 2
	})
	t.Logf("TIMING: 2 ready purchase pods %.1fs after apply", time.Since(start).Seconds())
	if i64(s.Status.Available) != "500" || i64(s.Status.Sold) != "0" {
		t.Errorf("fresh sale: expected sold 0 and available 500, got sold %s available %s", i64(s.Status.Sold), i64(s.Status.Available))
	}
	if want := "http://" + b.host; s.Status.URL != want {
		t.Errorf("status.url: expected %q, got %q", want, s.Status.URL)
	}

	b.waitRoute(t, time.Minute)
	t.Logf("TIMING: Ingress routes %s %.1fs after apply", b.host, time.Since(start).Seconds())
	code, body, err := b.post(t.Context(), "/v1/tickets/1/purchase", `{"buyerId":"alice"}`)
	if err != nil {
		t.Fatal(err)
	}
	if code != http.StatusCreated {
		t.Fatalf("POST /v1/tickets/1/purchase through the Ingress: expected 201, got %d %s", code, body)
	}
	var o order
	if err := json.Unmarshal(body, &o); err != nil {
		t.Fatalf("order %s: %v", body, err)
	}
	if o.TicketID != 1 || o.BuyerID != "alice" || o.OrderID == "" {
		t.Errorf("expected an order id for ticket 1 bought by alice, got %+v", o)
	}
	t.Logf("bought ticket 1 through the Ingress %.1fs after apply: order %s", time.Since(start).Seconds(), o.OrderID)

	// The same seat again: sold, whichever pod answers.
	b.expectSold(t, 1, "bob")

	// `kubectl get flashsales` is the dashboard: it shows the sale within seconds.
	sold := time.Now()
	waitSale(t, ns, name, 10*time.Second, "showing sold 1, available 499", func(s *salesv1alpha1.FlashSale) bool {
		return i64(s.Status.Sold) == "1" && i64(s.Status.Available) == "499"
	})
	t.Logf("status shows sold 1 / available 499 %.1fs after the purchase", time.Since(sold).Seconds())
	out := mustKubectl(t, nil, "-n", ns, "get", "flashsales")
	t.Logf("kubectl get flashsales:\n%s", out)
	if rows := kubectlTable(out); len(rows) != 1 || rows[0]["NAME"] != name || rows[0]["SOLD"] != "1" || rows[0]["AVAILABLE"] != "499" {
		t.Errorf("kubectl get flashsales: expected one row %s with SOLD 1 and AVAILABLE 499, got:\n%s", name, out)
	}
}
