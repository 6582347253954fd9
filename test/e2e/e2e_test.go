//go:build e2e

// Package e2e runs Flux-Order end to end on a real cluster: the operator
// installed by the Helm chart (make kind-up deploy), sales applied with
// kubectl, buyers coming through the Ingress.
//
//	make kind-up deploy test-e2e
//
// Environment: KUBE_CONTEXT (default kind-flux-order), OPERATOR_NAMESPACE
// (flux-order-system), INGRESS_ADDR (127.0.0.1:18080, where the ingress
// controller's HTTP port is published), E2E_KEEP=1 keeps the test namespace.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	kubeContext       = env("KUBE_CONTEXT", "kind-flux-order")
	operatorNamespace = env("OPERATOR_NAMESPACE", "flux-order-system")
	ingressAddr       = env("INGRESS_ADDR", "127.0.0.1:18080")
)

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// TestMain refuses to start without a cluster running the operator.
func TestMain(m *testing.M) {
	if err := preflight(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n(start a cluster with the operator: make kind-up deploy)\n", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

func preflight() error {
	if _, err := kubectl(context.Background(), nil, "get", "crd", "flashsales.sales.fluxorder.io"); err != nil {
		return fmt.Errorf("FlashSale CRD not found in context %s: %w", kubeContext, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := kubectl(ctx, nil, "-n", operatorNamespace, "wait", "deployment",
		"-l", "app.kubernetes.io/component=manager", "--for=condition=Available", "--timeout=2m")
	if err != nil {
		return fmt.Errorf("no available manager Deployment in namespace %s: %w", operatorNamespace, err)
	}
	return nil
}

// kubectl runs kubectl against the test cluster, with stdin if given.
func kubectl(ctx context.Context, stdin []byte, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--context", kubeContext}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func mustKubectl(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	out, err := kubectl(t.Context(), stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// testNamespace creates a namespace for one test and deletes it (with the
// sale's retained PVC) at the end unless E2E_KEEP is set; on failure it
// first logs what the namespace held.
func testNamespace(t *testing.T, prefix string) string {
	t.Helper()
	ns := fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano()%1_000_000)
	mustKubectl(t, nil, "create", "namespace", ns)
	t.Cleanup(func() {
		ctx := context.Background()
		if t.Failed() {
			out, _ := kubectl(ctx, nil, "-n", ns, "get", "flashsales,all,pvc,ingress", "-o", "wide")
			t.Logf("namespace %s:\n%s", ns, out)
			out, _ = kubectl(ctx, nil, "-n", ns, "get", "events", "--sort-by=.lastTimestamp")
			t.Logf("events:\n%s", out)
		}
		if os.Getenv("E2E_KEEP") != "" {
			t.Logf("E2E_KEEP set: keeping namespace %s", ns)
			return
		}
		if _, err := kubectl(ctx, nil, "delete", "namespace", ns, "--wait=false"); err != nil {
			t.Logf("cleanup: %v", err)
		}
	})
	return ns
}

// sale is the part of a FlashSale the tests read.
type sale struct {
	Spec struct {
		Tickets int64 `json:"tickets"`
	} `json:"spec"`
	Status struct {
		Phase         string `json:"phase"`
		Sold          int64  `json:"sold"`
		Available     int64  `json:"available"`
		ReadyReplicas int32  `json:"readyReplicas"`
		URL           string `json:"url"`
	} `json:"status"`
}

func getSale(ctx context.Context, ns, name string) (*sale, error) {
	out, err := kubectl(ctx, nil, "-n", ns, "get", "flashsale", name, "-o", "json")
	if err != nil {
		return nil, err
	}
	s := &sale{}
	return s, json.Unmarshal([]byte(out), s)
}

// waitSale polls the FlashSale until cond holds, logging phase changes.
func waitSale(t *testing.T, ns, name string, timeout time.Duration, what string, cond func(*sale) bool) *sale {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		s, err := getSale(t.Context(), ns, name)
		if err == nil {
			if s.Status.Phase != last {
				t.Logf("flashsale/%s: phase %q", name, s.Status.Phase)
				last = s.Status.Phase
			}
			if cond(s) {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("flashsale/%s: not %s after %s (last error %v, status %+v)", name, what, timeout, err, s)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// buyer talks to a sale's purchase API through the Ingress.
type buyer struct {
	host   string
	client *http.Client
}

func newBuyer(host string) *buyer {
	return &buyer{host: host, client: &http.Client{Timeout: 10 * time.Second}}
}

func (b *buyer) post(ctx context.Context, path, body string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+ingressAddr+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Host = b.host
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, err
}

// waitRoute waits until the ingress controller routes the host to the
// purchase API: until then it answers 404 (unknown host) or 502/503.
func (b *buyer) waitRoute(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+ingressAddr+"/v1/availability", nil)
		req.Host = b.host
		resp, err := b.client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("http://%s/v1/availability with Host %s: not 200 after %s (last: %v %v)", ingressAddr, b.host, timeout, statusOf(resp), err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func statusOf(r *http.Response) string {
	if r == nil {
		return "no response"
	}
	return r.Status
}

type order struct {
	OrderID  string `json:"orderId"`
	TicketID int64  `json:"ticketId"`
	BuyerID  string `json:"buyerId"`
}

// Scenario 1: a FlashSale with 500 seats, 2 purchase replicas and an
// Ingress reaches OnSale; a buyer buys a seat through the Ingress and the
// sale's status counts it.
func TestSaleGoesOnSaleAndSellsThroughIngress(t *testing.T) {
	ns := testNamespace(t, "e2e-onsale")
	const name = "concert"
	host := name + "." + ns + ".localtest"
	manifest := fmt.Sprintf(`apiVersion: sales.fluxorder.io/v1alpha1
kind: FlashSale
metadata:
  name: %s
  namespace: %s
spec:
  tickets: 500
  purchaseAPI:
    replicas: 2
  ingress:
    host: %s
  postgres:
    storage:
      size: 1Gi
`, name, ns, host)

	start := time.Now()
	mustKubectl(t, []byte(manifest), "apply", "-f", "-")
	waitSale(t, ns, name, 5*time.Minute, "OnSale", func(s *sale) bool { return s.Status.Phase == "OnSale" })
	onSale := time.Since(start)
	t.Logf("TIMING: flashsale/%s (500 seats, 2 replicas, ingress) OnSale %.1fs after apply", name, onSale.Seconds())

	s := waitSale(t, ns, name, 3*time.Minute, "2 ready purchase pods", func(s *sale) bool { return s.Status.ReadyReplicas == 2 })
	t.Logf("TIMING: 2 ready purchase pods %.1fs after apply", time.Since(start).Seconds())
	if s.Status.Available != 500 || s.Status.Sold != 0 {
		t.Errorf("fresh sale: sold %d available %d, want 0 and 500", s.Status.Sold, s.Status.Available)
	}
	if want := "http://" + host; s.Status.URL != want {
		t.Errorf("status.url %q, want %q", s.Status.URL, want)
	}

	b := newBuyer(host)
	b.waitRoute(t, time.Minute)
	code, body, err := b.post(t.Context(), "/v1/tickets/1/purchase", `{"buyerId":"alice"}`)
	if err != nil {
		t.Fatal(err)
	}
	if code != http.StatusCreated {
		t.Fatalf("POST /v1/tickets/1/purchase through the Ingress: %d %s, want 201", code, body)
	}
	var o order
	if err := json.Unmarshal(body, &o); err != nil {
		t.Fatalf("order %s: %v", body, err)
	}
	if o.TicketID != 1 || o.BuyerID != "alice" || o.OrderID == "" {
		t.Errorf("order %+v: want ticket 1 for alice with an order id", o)
	}
	t.Logf("bought ticket 1 through the Ingress %.1fs after apply: order %s", time.Since(start).Seconds(), o.OrderID)

	// The same seat again: sold, whichever pod answers.
	code, body, err = b.post(t.Context(), "/v1/tickets/1/purchase", `{"buyerId":"bob"}`)
	if err != nil || code != http.StatusConflict || !strings.Contains(string(body), "ticket_sold") {
		t.Errorf("second purchase of ticket 1: %d %s %v, want 409 ticket_sold", code, body, err)
	}

	// `kubectl get flashsales` is the dashboard: it shows the sale within seconds.
	sold := time.Now()
	waitSale(t, ns, name, 10*time.Second, "sold 1", func(s *sale) bool { return s.Status.Sold == 1 && s.Status.Available == 499 })
	t.Logf("status shows sold 1 / available 499 %.1fs after the purchase", time.Since(sold).Seconds())
	out := mustKubectl(t, nil, "-n", ns, "get", "flashsales")
	t.Logf("kubectl get flashsales:\n%s", out)
	if fields := strings.Fields(lastLine(out)); len(fields) < 4 || fields[0] != name || fields[2] != strconv.Itoa(1) {
		t.Errorf("kubectl get flashsales does not show SOLD 1:\n%s", out)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
