//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/loadtest"
)

// Scenario: a sale's orders reach the system behind it (issue 19). The
// reference receiver (the project's image running `flux-order receive`)
// takes the sale's webhooks while a storm sells it out through the
// Ingress; a third into the storm the receiver is stopped (scaled to 0, so
// deliveries fail and are retried) and started again. Every order is
// delivered — the union of the events both receivers printed is exactly
// the set of orders — with no bad signature, and status.delivery drains to
// 0 pending with every order counted delivered. Then the platform cancels
// one order (a refund) through a purchase pod's private port with the
// sale's admin token: the seat sells again through the Ingress, and the
// receiver gets the order.cancelled event and the new order.
func TestWebhooksDeliverEveryOrderOfAStormAcrossAReceiverRestart(t *testing.T) {
	t.Parallel()
	ns := testNamespace(t, "e2e-hooks")
	const name, tickets, hook = "hooks", 3000, "receiver"
	// The signing secret is the sale owner's (a Secret), the URL an
	// in-cluster Service: http, so the entry says insecureHTTP.
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	image := findOperator(t).image
	mustKubectl(t, []byte(fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: hooks, namespace: %[1]s}
stringData: {url: "http://receiver.%[1]s.svc:8080/", secret: %[2]q}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: receiver, namespace: %[1]s}
spec:
  selector: {matchLabels: {app: receiver}}
  template:
    metadata: {labels: {app: receiver}}
    spec:
      terminationGracePeriodSeconds: 10
      securityContext: {runAsNonRoot: true}
      containers:
      - name: receiver
        image: %[3]s
        imagePullPolicy: IfNotPresent
        command: ["/flux-order", "receive", "--listen", ":8080"]
        env: [{name: FLUX_ORDER_SIGNING_SECRET, valueFrom: {secretKeyRef: {name: hooks, key: secret}}}]
        ports: [{containerPort: 8080}]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
        resources: {requests: {cpu: 10m}}
        securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
---
apiVersion: v1
kind: Service
metadata: {name: receiver, namespace: %[1]s}
spec: {selector: {app: receiver}, ports: [{port: 8080}]}
`, ns, secret, image)), "apply", "-f", "-")
	mustKubectl(t, nil, "-n", ns, "rollout", "status", "deployment/receiver", "--timeout=2m")
	first := followReceiver(t, ns)

	b := startSaleWith(t, ns, name, tickets, 2, true, fmt.Sprintf(`  delivery:
    webhooks:
    - name: %s
      urlSecretRef: {name: hooks, key: url}
      signingSecretRef: {name: hooks, key: secret}
      events: [order.confirmed, order.cancelled]
      insecureHTTP: true
`, hook))
	auditor := newAuditor(t, ns, name)

	var (
		restart sync.Once
		chaos   sync.WaitGroup
		second  *receiverLog
	)
	cfg := b.loadConfig(loadtest.SellOut)
	cfg.Seats, cfg.Buyers, cfg.Rate, cfg.Concurrency = tickets, 3000, 300, 50
	cfg.UntilSoldOut, cfg.Duration = true, 2*time.Minute
	res := runLoad(t, cfg, func(s loadtest.Snapshot) {
		if s.Counts[loadtest.Created] < tickets/3 {
			return
		}
		restart.Do(func() {
			t.Logf("stopping the receiver %.1fs into the storm, %d seats sold", s.Elapsed.Seconds(), s.Counts[loadtest.Created])
			chaos.Go(func() {
				mustKubectl(t, nil, "-n", ns, "scale", "deployment/receiver", "--replicas=0")
				first.wait(t) // its log ends when it has exited
				time.Sleep(5 * time.Second)
				mustKubectl(t, nil, "-n", ns, "scale", "deployment/receiver", "--replicas=1")
				mustKubectl(t, nil, "-n", ns, "rollout", "status", "deployment/receiver", "--timeout=2m")
				second = followReceiver(t, ns)
				t.Logf("receiver started again")
			})
		})
	})
	created := sellRemaining(t, b, cfg, res.Created, 2*time.Minute)
	chaos.Wait()
	if second == nil {
		t.Fatalf("expected the storm to reach %d orders and restart the receiver; it stopped by %s after %d orders",
			tickets/3, res.Summary.StoppedBy, res.Summary.Count(loadtest.Created))
	}
	r := audit(t, auditor, created, b, true)
	if r.Orders != tickets {
		t.Fatalf("expected every one of %d seats sold, got %d orders", tickets, r.Orders)
	}

	start := time.Now()
	s := waitSale(t, ns, name, 3*time.Minute, "status.delivery: 0 pending, every order delivered", func(s *salesv1alpha1.FlashSale) bool {
		w := webhookStatus(s, hook)
		return w != nil && w.Pending == 0 && w.Delivered >= tickets
	})
	w := webhookStatus(s, hook)
	t.Logf("status.delivery drained %.1fs after the sell-out: %+v (summary %q)", time.Since(start).Seconds(), *w, s.Status.Delivery.Summary)
	if w.Delivered != tickets || w.Dead != 0 || s.Status.Delivery.Summary != "ok" {
		t.Errorf("expected %d delivered, 0 dead, summary ok; got delivered %d, dead %d, summary %q", tickets, w.Delivered, w.Dead, s.Status.Delivery.Summary)
	}

	refunded := created[0]
	resold := cancelAndResell(t, ns, name, b, refunded)
	s = waitSale(t, ns, name, 2*time.Minute, "status.delivery: the cancellation and the resale delivered, status.cancelled 1", func(s *salesv1alpha1.FlashSale) bool {
		w := webhookStatus(s, hook)
		return w != nil && w.Pending == 0 && w.Delivered >= tickets+2 && s.Status.Cancelled != nil && *s.Status.Cancelled == 1
	})
	if w := webhookStatus(s, hook); w.Delivered != tickets+2 || i64(s.Status.Sold) != fmt.Sprint(tickets) {
		t.Errorf("after the cancellation and the resale: expected %d delivered and sold %d, got %d delivered, sold %s", tickets+2, tickets, w.Delivered, i64(s.Status.Sold))
	}

	// The second receiver's account ends with it: stop it, then compare
	// what both printed with the orders.
	mustKubectl(t, nil, "-n", ns, "scale", "deployment/receiver", "--replicas=0")
	second.wait(t)
	want := map[uuid.UUID]bool{resold: true}
	for _, o := range created {
		want[o.ID] = true
	}
	got, cancelled := map[uuid.UUID]bool{}, map[uuid.UUID]bool{}
	for _, l := range []*receiverLog{first, second} {
		for id := range l.orders {
			got[id] = true
		}
		for id := range l.cancelled {
			cancelled[id] = true
		}
		if l.badSignatures != 0 || l.problems != nil {
			t.Errorf("receiver %s: expected every delivery verified and every line an event, got %d bad signatures, %v", l.pod, l.badSignatures, l.problems)
		}
	}
	var missing, unknown int
	for id := range want {
		if !got[id] {
			missing++
		}
	}
	for id := range got {
		if !want[id] {
			unknown++
		}
	}
	t.Logf("receivers: %s printed %d events (%s), %s printed %d (%s); %d distinct orders delivered",
		first.pod, len(first.orders), first.stats, second.pod, len(second.orders), second.stats, len(got))
	if missing != 0 || unknown != 0 {
		t.Errorf("expected the receivers to have printed exactly the %d orders: %d orders never printed, %d events of no order", len(want), missing, unknown)
	}
	if len(cancelled) != 1 || !cancelled[refunded.ID] {
		t.Errorf("expected one order.cancelled event, for order %s; got %v", refunded.ID, cancelled)
	}
}

// cancelAndResell cancels order o through a purchase pod's private port
// (port-forwarded, as docs/purchase.md tells an operator to) with the
// sale's admin token, then buys its seat again through the Ingress until
// a pod sells it (every pod frees it within about a second), and returns
// the new order's id.
func cancelAndResell(t *testing.T, ns, sale string, b *buyer, o loadtest.Order) uuid.UUID {
	t.Helper()
	token, err := base64.StdEncoding.DecodeString(mustKubectl(t, nil, "-n", ns, "get", "secret", sale+"-sale", "-o", "jsonpath={.data.admin-token}"))
	if err != nil || len(token) < 32 {
		t.Fatalf("the sale's Secret %s-sale: expected an admin-token of 32+ bytes, got %d bytes (%v)", sale, len(token), err)
	}
	pods, err := salePods(t.Context(), ns, sale, "purchase")
	if err != nil || len(pods) == 0 {
		t.Fatalf("purchase pods of %s: %v (%d)", sale, err, len(pods))
	}
	url := fmt.Sprintf("http://127.0.0.1:%s/admin/v1/orders/%s/cancel", forwardedPort(t, ns, pods[0].Name, 9090), o.ID)
	cancel := func(auth string) (int, string) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url,
			strings.NewReader(`{"reason":"e2e: payment refunded","cancelledBy":"e2e suite"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", url, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := cancel(""); code != http.StatusUnauthorized {
		t.Errorf("cancel without the token: expected 401, got %d %s", code, body)
	}
	if code, body := cancel(string(token)); code != http.StatusOK || !strings.Contains(body, o.ID.String()) {
		t.Fatalf("cancel order %s with the sale's admin token: expected 200 naming it, got %d %s", o.ID, code, body)
	}
	t.Logf("cancelled order %s (seat %d) through pod %s's private port", o.ID, o.TicketID, pods[0].Name)

	var resold uuid.UUID
	start := time.Now()
	testservers.Eventually(t, 30*time.Second, 200*time.Millisecond, fmt.Sprintf("seat %d sold again through the Ingress", o.TicketID), func() error {
		code, body, err := b.post(t.Context(), fmt.Sprintf("/v1/tickets/%d/purchase", o.TicketID), `{"buyerId":"second-chance"}`)
		if err != nil || code != http.StatusCreated {
			return fmt.Errorf("%d %s %v", code, body, err)
		}
		var got loadtest.Order
		if err := json.Unmarshal(body, &got); err != nil {
			return err
		}
		resold = got.ID
		return nil
	})
	t.Logf("seat %d sold again %.2fs after the cancellation: order %s", o.TicketID, time.Since(start).Seconds(), resold)
	return resold
}

func webhookStatus(s *salesv1alpha1.FlashSale, name string) *salesv1alpha1.WebhookDeliveryStatus {
	if s.Status.Delivery == nil {
		return nil
	}
	for i := range s.Status.Delivery.Webhooks {
		if s.Status.Delivery.Webhooks[i].Name == name {
			return &s.Status.Delivery.Webhooks[i]
		}
	}
	return nil
}

// receiverLog is what one receiver pod printed: one line per event it
// took first, then (on SIGTERM) its stats line.
type receiverLog struct {
	pod           string
	done          chan struct{}
	orders        map[uuid.UUID]bool // order.confirmed events
	cancelled     map[uuid.UUID]bool // order.cancelled events
	stats         string
	badSignatures int
	problems      []string
}

// followReceiver follows the log of the receiver Deployment's one ready pod
// until the pod exits.
func followReceiver(t *testing.T, ns string) *receiverLog {
	t.Helper()
	pods, err := kubectl(t.Context(), nil, "-n", ns, "get", "pods", "-l", "app=receiver",
		"--field-selector=status.phase=Running", "-o", "jsonpath={.items[*].metadata.name}")
	if err != nil || len(strings.Fields(pods)) != 1 {
		t.Fatalf("expected one running receiver pod, got %q %v", pods, err)
	}
	l := &receiverLog{pod: strings.TrimSpace(pods), done: make(chan struct{}), orders: map[uuid.UUID]bool{}, cancelled: map[uuid.UUID]bool{}}
	go func() {
		defer close(l.done)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		out, err := kubectl(ctx, nil, "-n", ns, "logs", "-f", l.pod)
		if err != nil {
			l.problems = append(l.problems, err.Error())
		}
		sc := bufio.NewScanner(strings.NewReader(out))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if stats, ok := strings.CutPrefix(line, "received "); ok {
				l.stats = stats
				var events, duplicates int
				if _, err := fmt.Sscanf(stats, "%d events, %d duplicates, %d bad signatures", &events, &duplicates, &l.badSignatures); err != nil {
					l.problems = append(l.problems, fmt.Sprintf("stats line %q: %v", line, err))
				}
				continue
			}
			if strings.HasPrefix(line, "receiving on ") {
				continue
			}
			var ev struct {
				Type string `json:"type"`
				Data struct {
					OrderID uuid.UUID `json:"orderId"`
				} `json:"data"`
			}
			switch err := json.Unmarshal([]byte(line), &ev); {
			case err == nil && ev.Type == "order.confirmed":
				l.orders[ev.Data.OrderID] = true
			case err == nil && ev.Type == "order.cancelled":
				l.cancelled[ev.Data.OrderID] = true
			case len(l.problems) < 5:
				l.problems = append(l.problems, fmt.Sprintf("line %.120q: %v", line, err))
			}
		}
	}()
	return l
}

// wait waits for the pod to exit (its log to end).
func (l *receiverLog) wait(t *testing.T) {
	t.Helper()
	select {
	case <-l.done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("receiver %s: its log did not end within 2 minutes of stopping it", l.pod)
	}
	if l.stats == "" {
		t.Errorf("receiver %s: expected its stats line on exit", l.pod)
	}
}
