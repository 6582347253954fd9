//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/client/config"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/loadtest"
)

var (
	kubeContext       = env("KUBE_CONTEXT", "kind-flux-order")
	operatorNamespace = env("OPERATOR_NAMESPACE", "flux-order-system")
	ingressAddr       = env("INGRESS_ADDR", "127.0.0.1:18080")

	// kube reads and deletes objects; the tests still apply, scale and list
	// sales with kubectl, as a person would.
	kube client.Client
)

// pollInterval is how often the tests' waits (testservers.Eventually) look
// again: short enough that measured durations (OnSale, dashboard lag) are
// accurate to a fraction of a second.
const pollInterval = 200 * time.Millisecond

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
	cfg, err := ctrlconfig.GetConfigWithContext(kubeContext)
	if err != nil {
		return fmt.Errorf("kubeconfig context %s: %w", kubeContext, err)
	}
	// Several tests poll at once; client-go's default 5 QPS would throttle them.
	cfg.QPS, cfg.Burst = 50, 100
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := salesv1alpha1.AddToScheme(scheme); err != nil {
		return err
	}
	if kube, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		return err
	}
	if _, err := kubectl(context.Background(), nil, "get", "crd", "flashsales.sales.fluxorder.io"); err != nil {
		return fmt.Errorf("FlashSale CRD not found in context %s: %w", kubeContext, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err = kubectl(ctx, nil, "-n", operatorNamespace, "wait", "deployment",
		"-l", "app.kubernetes.io/component=manager", "--for=condition=Available", "--timeout=2m")
	if err != nil {
		return fmt.Errorf("no available manager Deployment in namespace %s: %w", operatorNamespace, err)
	}
	if err := checkIngress(); err != nil {
		return err
	}
	return waitOldNamespaces()
}

// checkIngress fails fast when nothing answers HTTP on ingressAddr: every
// test buys through the Ingress, and without an ingress controller each
// would only time out, minutes later. Any answer will do (an unknown host
// gets a 404).
func checkIngress() error {
	b := newBuyer("e2e-preflight.localtest")
	err := testservers.Eventually(nil, 30*time.Second, time.Second, "an HTTP answer on "+ingressAddr, func() error {
		_, _, err := b.do(context.Background(), http.MethodGet, "/", "") // the buyer's client times out
		return err
	})
	if err != nil {
		return fmt.Errorf("%w; the ingress controller's NodePort 30080 should be published there "+
			"(make kind-up installs one from INGRESS_MANIFEST or the kind-offline kit)", err)
	}
	return nil
}

// testNamespaceLabel marks the namespaces the tests create.
const testNamespaceLabel = "e2e.fluxorder.io/test"

// waitOldNamespaces waits until the namespaces of an earlier run are
// deleted: their pods shutting down would slow this run's sales and skew
// the time to OnSale that scenario 1 measures.
func waitOldNamespaces() error {
	start := time.Now()
	err := testservers.Eventually(nil, 3*time.Minute, time.Second, "the namespaces of an earlier run deleted", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var list corev1.NamespaceList
		if err := kube.List(ctx, &list, client.HasLabels{testNamespaceLabel}); err != nil {
			return err
		}
		var terminating []string
		for _, ns := range list.Items {
			if ns.DeletionTimestamp != nil {
				terminating = append(terminating, ns.Name)
			}
		}
		if len(terminating) > 0 {
			return fmt.Errorf("still terminating: %s", strings.Join(terminating, ", "))
		}
		return nil
	})
	if d := time.Since(start); err == nil && d > time.Second {
		fmt.Printf("e2e: waited %.0fs for the namespaces of an earlier run to be deleted\n", d.Seconds())
	}
	return err
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
// first logs what the namespace held, its events and the pods' last logs.
func testNamespace(t *testing.T, prefix string) string {
	t.Helper()
	ns := fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano()%1_000_000)
	if err := kube.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: ns, Labels: map[string]string{testNamespaceLabel: "true"},
	}}); err != nil {
		t.Fatalf("create namespace %s: %v", ns, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpNamespace(t, ns)
		}
		if os.Getenv("E2E_KEEP") != "" {
			t.Logf("E2E_KEEP set: keeping namespace %s", ns)
			return
		}
		if _, err := kubectl(context.Background(), nil, "delete", "namespace", ns, "--wait=false"); err != nil {
			t.Logf("cleanup: %v", err)
		}
	})
	return ns
}

// dumpNamespace writes what a failed test leaves behind to
// $E2E_DUMP_DIR/<namespace>.txt, for the diagnosis, and logs one line
// naming it. A file rather than the test's log: the dump is hundreds of
// lines, and in the log it would bury the failure's own message, which
// must stay right above the test's --- FAIL line (.ci/run prints the
// dumps after the suite).
func dumpNamespace(t *testing.T, ns string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var b strings.Builder
	for _, args := range [][]string{
		{"-n", ns, "get", "flashsales", "-o", "yaml"},
		{"-n", ns, "get", "flashsales,all,pvc,ingress,endpointslices", "-o", "wide"},
		{"-n", ns, "get", "events", "--sort-by=.lastTimestamp"},
		{"-n", ns, "logs", "--tail=30", "--prefix", "--all-containers", "--ignore-errors", "-l", "app.kubernetes.io/name=flux-order"},
		{"-n", operatorNamespace, "logs", "--tail=40", "-l", "app.kubernetes.io/component=manager"},
	} {
		out, err := kubectl(ctx, nil, args...)
		if err != nil {
			out += "\n" + err.Error()
		}
		fmt.Fprintf(&b, "$ kubectl %s\n%s\n", strings.Join(args, " "), out)
	}
	dir := env("E2E_DUMP_DIR", filepath.Join(os.TempDir(), "flux-order-e2e-dumps"))
	path := filepath.Join(dir, ns+".txt")
	err := os.MkdirAll(dir, 0o755)
	if err == nil {
		err = os.WriteFile(path, []byte(b.String()), 0o644)
	}
	if err != nil {
		t.Logf("namespace %s: cannot write its dump (%v), so here it is:\n%s", ns, err, b.String())
		return
	}
	t.Logf("namespace %s dumped to %s", ns, path)
}

// kindIngressCIDR is where the kind ingress controller's pods are: kind's
// default pod network (podSubnet), on which Traefik
// (../shared/kind-offline/manifests/traefik.yaml, a Deployment without
// hostNetwork) runs.
const kindIngressCIDR = "10.244.0.0/16"

// saleHost is the Ingress host of a test sale: unique per namespace.
func saleHost(ns, name string) string { return name + "." + ns + ".localtest" }

// applySale applies a FlashSale with an Ingress with kubectl, as a platform
// team would, and returns its host. The suite runs several sales at once on
// one 2-core kind node: their CPU requests are set small (the defaults,
// sized for real sales, would leave pods Pending for lack of CPU).
func applySale(t *testing.T, ns, name string, tickets int64, replicas int) string {
	t.Helper()
	return applySaleOf(t, ns, name, tickets, replicas, true)
}

// applySaleOf is applySale; without frontDoor the manifest leaves
// spec.frontDoor out (a CRD of before it, as the upgrade scenario's
// previous release has, refuses the field).
func applySaleOf(t *testing.T, ns, name string, tickets int64, replicas int, frontDoor bool) string {
	t.Helper()
	return applySaleWith(t, ns, name, tickets, replicas, frontDoor, "")
}

// applySaleWith is applySaleOf with more of the spec: extra is YAML at the
// spec's indentation (two spaces), such as a delivery block.
func applySaleWith(t *testing.T, ns, name string, tickets int64, replicas int, frontDoor bool, extra string) string {
	t.Helper()
	host := saleHost(ns, name)
	door := ""
	if frontDoor {
		// The kind ingress (Traefik) runs on the pod network: its
		// X-Forwarded-For names the client. Every buyer of this suite comes
		// from one host (the NodePort masquerades them), so the per-client
		// caps are off here.
		door = fmt.Sprintf("  frontDoor:\n    trustedProxies: [%s]\n    maxStreamsPerClient: 0\n    joinsPerClientPerMinute: 0\n", kindIngressCIDR)
	}
	manifest := fmt.Sprintf(`apiVersion: sales.fluxorder.io/v1alpha1
kind: FlashSale
metadata:
  name: %s
  namespace: %s
spec:
  tickets: %d
  purchaseAPI:
    replicas: %d
    resources: {requests: {cpu: 10m}}
  ingress:
    host: %s
%s%s  redis:
    resources: {requests: {cpu: 10m}}
  postgres:
    resources: {requests: {cpu: 10m}}
    storage:
      size: 1Gi
`, name, ns, tickets, replicas, host, door, extra)
	mustKubectl(t, []byte(manifest), "apply", "-f", "-")
	return host
}

// provisioning bounds how many sales start at once. Many containers
// starting together on a 2-core cgroup v1 host make runc fail some of them
// ("unable to freeze"); kubelet retries ordinary pods, but a failed
// local-path helper pod stalls the sale's volume for about two minutes.
// Two at a time costs a few seconds in all.
var provisioning = make(chan struct{}, 2)

// startSale applies a sale and waits until it is OnSale with every purchase
// pod ready and the Ingress routing its host, which is when buyers can come.
func startSale(t *testing.T, ns, name string, tickets int64, replicas int) *buyer {
	t.Helper()
	return startSaleOf(t, ns, name, tickets, replicas, true)
}

// startSaleOf is startSale; frontDoor as applySaleOf's.
func startSaleOf(t *testing.T, ns, name string, tickets int64, replicas int, frontDoor bool) *buyer {
	t.Helper()
	return startSaleWith(t, ns, name, tickets, replicas, frontDoor, "")
}

// startSaleWith is startSaleOf with more of the spec (applySaleWith).
func startSaleWith(t *testing.T, ns, name string, tickets int64, replicas int, frontDoor bool, extra string) *buyer {
	t.Helper()
	provisioning <- struct{}{}
	defer func() { <-provisioning }()
	start := time.Now()
	b := newBuyer(applySaleWith(t, ns, name, tickets, replicas, frontDoor, extra))
	waitSale(t, ns, name, 5*time.Minute, fmt.Sprintf("OnSale with %d ready purchase pods", replicas), func(s *salesv1alpha1.FlashSale) bool {
		return s.Status.Phase == salesv1alpha1.PhaseOnSale && s.Status.ReadyReplicas == int32(replicas)
	})
	b.waitRoute(t, time.Minute)
	t.Logf("TIMING: flashsale %s/%s (%d seats, %d replicas) OnSale and routed %.1fs after apply", ns, name, tickets, replicas, time.Since(start).Seconds())
	return b
}

func getSale(ctx context.Context, ns, name string) (*salesv1alpha1.FlashSale, error) {
	s := &salesv1alpha1.FlashSale{}
	return s, kube.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, s)
}

// saleState is the status of a sale in one line, for logs and failures.
func saleState(s *salesv1alpha1.FlashSale) string {
	if s == nil {
		return "no sale"
	}
	st := s.Status
	return fmt.Sprintf("phase %q sold %s available %s ready %d/%d", st.Phase, i64(st.Sold), i64(st.Available), st.ReadyReplicas, st.Replicas)
}

func i64(p *int64) string {
	if p == nil {
		return "<unset>"
	}
	return fmt.Sprint(*p)
}

// waitSale waits until cond holds for the FlashSale, logging phase changes.
func waitSale(t *testing.T, ns, name string, timeout time.Duration, what string, cond func(*salesv1alpha1.FlashSale) bool) *salesv1alpha1.FlashSale {
	t.Helper()
	var last *salesv1alpha1.FlashSale
	lastPhase := salesv1alpha1.Phase("-")
	testservers.Eventually(t, timeout, pollInterval, fmt.Sprintf("flashsale %s/%s %s", ns, name, what), func() error {
		s, err := getSale(t.Context(), ns, name)
		if err != nil {
			return err
		}
		last = s
		if s.Status.Phase != lastPhase {
			t.Logf("flashsale %s/%s: phase %q", ns, name, s.Status.Phase)
			lastPhase = s.Status.Phase
		}
		if !cond(s) {
			return errors.New(saleState(s))
		}
		return nil
	})
	return last
}

// buyer talks to a sale's purchase API through the Ingress.
type buyer struct {
	host   string
	client *http.Client
}

func newBuyer(host string) *buyer {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // 127.0.0.1 only, whatever HTTP_PROXY says
	return &buyer{host: host, client: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

func (b *buyer) do(ctx context.Context, method, path, body string) (int, []byte, error) {
	code, _, data, err := b.doHeader(ctx, method, path, body)
	return code, data, err
}

// doHeader is do that also returns the answer's header.
func (b *buyer) doHeader(ctx context.Context, method, path, body string) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+ingressAddr+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Host = b.host
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, data, err
}

func (b *buyer) post(ctx context.Context, path, body string) (int, []byte, error) {
	return b.do(ctx, http.MethodPost, path, body)
}

// expectSold buys a seat sold a moment ago, through the Ingress, until the
// answer is 409 ticket_sold: a pod writes the seat's sold marker right
// after its 201, and until then another pod answers 409 ticket_locked (the
// winner's lock). Any other answer fails t.
func (b *buyer) expectSold(t *testing.T, ticket int64, buyer string) {
	t.Helper()
	path, body := fmt.Sprintf("/v1/tickets/%d/purchase", ticket), fmt.Sprintf(`{"buyerId":%q}`, buyer)
	testservers.Eventually(t, 5*time.Second, 20*time.Millisecond, fmt.Sprintf("seat %d answered ticket_sold", ticket), func() error {
		code, out, err := b.post(t.Context(), path, body)
		switch {
		case err == nil && code == http.StatusConflict && strings.Contains(string(out), "ticket_sold"):
			return nil
		case err == nil && code == http.StatusConflict && strings.Contains(string(out), "ticket_locked"):
			return fmt.Errorf("409 ticket_locked")
		}
		t.Fatalf("seat %d again: expected 409 ticket_sold, got %d %s %v", ticket, code, out, err)
		return nil
	})
}

// waitRoute waits until the ingress controller routes the host to the
// purchase API: until then it answers 404 (unknown host) or 502/503.
func (b *buyer) waitRoute(t *testing.T, timeout time.Duration) {
	t.Helper()
	testservers.Eventually(t, timeout, pollInterval, fmt.Sprintf("GET http://%s/v1/availability with Host %s to answer 200", ingressAddr, b.host),
		func() error {
			code, body, err := b.do(t.Context(), http.MethodGet, "/v1/availability", "")
			if err == nil && code != http.StatusOK {
				err = fmt.Errorf("%d %s", code, bytes.TrimSpace(body))
			}
			return err
		})
}

// loadConfig is a load test on the sale behind b, through the Ingress.
func (b *buyer) loadConfig(scenario loadtest.Scenario) loadtest.Config {
	return loadtest.Config{
		URL:      "http://" + ingressAddr,
		Host:     b.host,
		Scenario: scenario,
		Seat:     1,
		Buyers:   1000,
		Timeout:  10 * time.Second,
	}
}

// availability is the audit's view of GET /v1/availability through the Ingress.
func (b *buyer) availability(ctx context.Context) (loadtest.Availability, error) {
	return loadtest.FetchAvailability(ctx, b.loadConfig(loadtest.HotSeat))
}

// stormMu lets one storm run at a time: on a 2-core machine two storms would
// slow each other down and blur what each measures. Provisioning, scaling
// and deleting sales still overlap with storms.
var stormMu sync.Mutex

// runLoad runs a load test while holding stormMu, logging progress every
// few seconds and the summary at the end. onProgress, if set, sees every
// snapshot (every 250 ms) from the load's reporting goroutine.
func runLoad(t *testing.T, cfg loadtest.Config, onProgress func(loadtest.Snapshot)) *loadtest.Result {
	t.Helper()
	stormMu.Lock()
	defer stormMu.Unlock()
	var lastLog time.Duration
	cfg.ProgressEvery = 250 * time.Millisecond
	cfg.Progress = func(s loadtest.Snapshot) {
		if onProgress != nil {
			onProgress(s)
		}
		if s.Elapsed-lastLog >= 5*time.Second && !s.Done {
			lastLog = s.Elapsed
			t.Logf("load %.1fs: %d requests, %d orders, %d 5xx, %d transport errors", s.Elapsed.Seconds(), s.Total,
				s.Counts[loadtest.Created], s.Counts[loadtest.ServerError], s.Counts[loadtest.TransportError])
		}
	}
	res, err := loadtest.Run(t.Context(), cfg)
	if err != nil {
		t.Fatalf("load test %s: %v", cfg.Scenario, err)
	}
	var text bytes.Buffer
	_ = loadtest.WriteText(&text, res.Summary)
	t.Logf("load test summary:\n%s", text.String())
	return res
}

// storm is buyers buying random seats until their context ends, their
// answers counted by "<status> <code>" ("201 ", "409 ticket_sold", ...,
// "transport error").
type storm struct {
	mu     sync.Mutex
	counts map[string]int
	// unavailable is each "503 unavailable" answer: when it came and how
	// long it took (about a bound, such as checkout.Timeout or the seat
	// store's pipeline bound: the node's overload).
	unavailable []answered
	wg          sync.WaitGroup
}

// startStorm starts workers buyers on b's sale of seats seats. A buyer
// answered 503 waits out its Retry-After (at most maxRetryAfter) before
// the next purchase, as a real client does: a storm's share of 503s then
// says how long buyers were turned away, not how fast a loop that ignores
// Retry-After can collect refusals (which, on the loaded 2-core node,
// swung the same rollout's share between 1% and 10%).
func startStorm(ctx context.Context, b *buyer, seats, workers int) *storm {
	st := &storm{counts: map[string]int{}}
	for w := range workers {
		st.wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				sent := time.Now()
				code, header, body, err := b.doHeader(ctx, http.MethodPost, fmt.Sprintf("/v1/tickets/%d/purchase", rand.IntN(seats)+1),
					fmt.Sprintf(`{"buyerId":"b%d-%d"}`, w, i))
				if ctx.Err() != nil {
					return
				}
				key := "transport error"
				if err == nil {
					var p struct{ Code string }
					_ = json.Unmarshal(body, &p)
					key = fmt.Sprintf("%d %s", code, p.Code)
				}
				st.mu.Lock()
				st.counts[key]++
				if key == overloaded {
					st.unavailable = append(st.unavailable, answered{at: time.Now(), took: time.Since(sent).Round(time.Millisecond)})
				}
				st.mu.Unlock()
				if code == http.StatusServiceUnavailable {
					select {
					case <-ctx.Done():
					case <-time.After(retryAfter(header)):
					}
				}
			}
		})
	}
	return st
}

// maxRetryAfter bounds the wait a storm buyer takes after a 503.
const maxRetryAfter = time.Second

// retryAfter is the wait a 503's Retry-After asks for (delta-seconds),
// within maxRetryAfter; a 503 without one (the Ingress's own) waits
// maxRetryAfter.
func retryAfter(h http.Header) time.Duration {
	s, err := strconv.Atoi(h.Get("Retry-After"))
	if err != nil || s < 0 || time.Duration(s)*time.Second > maxRetryAfter {
		return maxRetryAfter
	}
	return time.Duration(s) * time.Second
}

// answers are the counts so far.
func (st *storm) answers() map[string]int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return maps.Clone(st.counts)
}

// wait waits for the buyers to stop (their context ended) and returns the
// counts, logging how long each "503 unavailable" took.
func (st *storm) wait(t *testing.T) map[string]int {
	t.Helper()
	st.wg.Wait()
	if len(st.unavailable) > 0 {
		took := make([]time.Duration, len(st.unavailable))
		for i, a := range st.unavailable {
			took[i] = a.took
		}
		t.Logf("%q answers took %v", overloaded, took)
	}
	return st.answers()
}

// answered is one answer's arrival and duration.
type answered struct {
	at   time.Time
	took time.Duration
}

// stalls counts the storm's "503 unavailable" answers as the stalls that
// caused them: answers that came within a second of the one before are
// one stall. One stall fails every purchase waiting on it at once (seen:
// 2 answers of 2.59 s each, together, both waiting on one PostgreSQL
// connection whose handshake outlasted connect_timeout).
func (st *storm) stalls() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := 0
	for i, a := range st.unavailable {
		if i == 0 || a.at.Sub(st.unavailable[i-1].at) > time.Second {
			n++
		}
	}
	return n
}

// overloaded is the answer of a purchase that outlasted its bound.
var overloaded = fmt.Sprintf("%d unavailable", http.StatusServiceUnavailable)

// check fails t for every kind of answer that is not allowed, but
// tolerates (and logs) "503 unavailable" from at most one stall in every
// oneIn answers, rounded up: purchases that outlast their bound on the
// loaded 2-core node. Counted by stall, because one stall fails every
// purchase in flight on its pod at once; rounded up, because one can come
// in any storm, however short (seen: 1 of 127 answers while two other
// scenarios provisioned their sales).
func (st *storm) check(t *testing.T, answers map[string]int, allowed map[string]bool, oneIn int) {
	t.Helper()
	total := 0
	for _, n := range answers {
		total += n
	}
	var kinds []string
	for k := range allowed {
		kinds = append(kinds, strconv.Quote(k))
	}
	slices.Sort(kinds)
	stalls := st.stalls()
	for k, n := range answers {
		switch {
		case allowed[k]:
		case k == overloaded && stalls <= (total+oneIn-1)/oneIn:
			t.Logf("tolerated: %d × %q in %d stall(s), of %d answers (overload of the node)", n, k, stalls, total)
		default:
			t.Errorf("expected only %s (and 503 unavailable from at most 1 stall in %d answers, rounded up), got %d × %q (%d stalls) of %d answers", strings.Join(kinds, ", "), oneIn, n, k, stalls, total)
		}
	}
}

// forwardedPort runs `kubectl port-forward` to a pod's port on a free local
// port until the test ends, and returns the local port.
func forwardedPort(t *testing.T, ns, pod string, port int) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "kubectl", "--context", kubeContext, "-n", ns, "port-forward",
		"--address", "127.0.0.1", "pod/"+pod, fmt.Sprintf(":%d", port))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("kubectl port-forward: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})

	// "Forwarding from 127.0.0.1:40123 -> 5432" once the port is listening.
	re := regexp.MustCompile(`^Forwarding from 127\.0\.0\.1:(\d+) -> `)
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sent := false
		for sc.Scan() { // read to the end so kubectl never blocks on a full pipe
			if m := re.FindStringSubmatch(sc.Text()); m != nil && !sent {
				found <- m[1]
				sent = true
			}
		}
		close(found)
	}()
	select {
	case p, ok := <-found:
		if !ok {
			t.Fatalf("kubectl port-forward pod/%s %d exited without forwarding: %s", pod, port, strings.TrimSpace(stderr.String()))
		}
		return p
	case <-time.After(30 * time.Second):
		t.Fatalf("kubectl port-forward pod/%s %d: no \"Forwarding from\" line after 30s: %s", pod, port, strings.TrimSpace(stderr.String()))
	}
	return ""
}

// saleDatabaseURL is the sale's own database URL (Secret <sale>-postgres,
// key url) with its in-cluster host replaced by a port-forward to the
// PostgreSQL pod.
func saleDatabaseURL(t *testing.T, ns, sale string) string {
	t.Helper()
	sec := &corev1.Secret{}
	if err := kube.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: sale + "-postgres"}, sec); err != nil {
		t.Fatalf("Secret %s-postgres: %v", sale, err)
	}
	u, err := url.Parse(string(sec.Data["url"]))
	if err != nil || u.Host == "" {
		t.Fatalf("Secret %s-postgres key url: expected a postgres:// URL, got an unparsable value (%v)", sale, err)
	}
	u.Host = "127.0.0.1:" + forwardedPort(t, ns, sale+"-postgres-0", 5432)
	// The server certificate names the Service, not 127.0.0.1: verify the
	// chain against the sale's CA (Secret <sale>-tls) without the name.
	tlsSec := &corev1.Secret{}
	if err := kube.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: sale + "-tls"}, tlsSec); err != nil {
		t.Fatalf("Secret %s-tls: %v", sale, err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, tlsSec.Data["ca.crt"], 0o600); err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("sslmode", "verify-ca")
	q.Set("sslrootcert", caFile)
	u.RawQuery = q.Encode()
	return u.String()
}

// saleAuditor audits one sale's orders through a port-forward.
type saleAuditor struct {
	*loadtest.Auditor
	ns, sale string
}

// newAuditor counts the sale's orders before a load, through a port-forward.
func newAuditor(t *testing.T, ns, sale string) *saleAuditor {
	t.Helper()
	a, err := loadtest.NewAuditor(t.Context(), saleDatabaseURL(t, ns, sale))
	if err != nil {
		t.Fatalf("auditor for %s/%s: %v", ns, sale, err)
	}
	return &saleAuditor{Auditor: a, ns: ns, sale: sale}
}

// salePods lists a component's pods that are not being deleted.
func salePods(ctx context.Context, ns, sale, component string) ([]corev1.Pod, error) {
	var pods corev1.PodList
	err := kube.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{
		"app.kubernetes.io/instance": sale, "app.kubernetes.io/component": component,
	})
	var live []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			live = append(live, p)
		}
	}
	return live, err
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// readyPods counts pods that are Ready and not being deleted.
func readyPods(pods []corev1.Pod) int {
	n := 0
	for i := range pods {
		if podReady(&pods[i]) {
			n++
		}
	}
	return n
}

// deletePod deletes a pod as `kubectl delete pod` does: with the pod's own
// grace period, so it gets its preStop hook and SIGTERM.
func deletePod(ctx context.Context, ns, name string) error {
	return kube.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}})
}

// gone says whether an object no longer exists (or was replaced by a new
// object of the same name).
func gone(ctx context.Context, obj client.Object) (bool, error) {
	uid := obj.GetUID()
	err := kube.Get(ctx, client.ObjectKeyFromObject(obj), obj)
	switch {
	case apierrors.IsNotFound(err):
		return true, nil
	case err != nil:
		return false, err
	}
	return uid != "" && obj.GetUID() != uid, nil
}

// kubectlTable parses `kubectl get` output into rows of column name → value.
// kubectl left-aligns each value under its column's header, and a column may
// be empty (HELD, WAITING, HIBERNATED): values are cut at the headers'
// offsets, not split on blanks.
func kubectlTable(out string) []map[string]string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) < 1 || strings.TrimSpace(lines[0]) == "" {
		return nil
	}
	type column struct {
		name  string
		start int
	}
	var cols []column
	for i := 0; i < len(lines[0]); {
		if lines[0][i] == ' ' {
			i++
			continue
		}
		j := i
		for j < len(lines[0]) && lines[0][j] != ' ' {
			j++
		}
		cols = append(cols, column{lines[0][i:j], i})
		i = j
	}
	var rows []map[string]string
	for _, l := range lines[1:] {
		row := map[string]string{}
		for k, c := range cols {
			end := len(l)
			if k+1 < len(cols) {
				end = min(cols[k+1].start, len(l))
			}
			if c.start < end {
				row[c.name] = strings.TrimSpace(l[c.start:end])
			} else {
				row[c.name] = ""
			}
		}
		rows = append(rows, row)
	}
	return rows
}

// errorsOf is the load's failure counts in one line.
func errorsOf(s loadtest.Summary) string {
	var parts []string
	for _, o := range []loadtest.Outcome{loadtest.OtherAnswer, loadtest.ServerError, loadtest.TransportError} {
		if n := s.Count(o); n > 0 {
			parts = append(parts, fmt.Sprintf("%d %v (e.g. %s)", n, o, s.Outcomes[o.Key()].Example))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
