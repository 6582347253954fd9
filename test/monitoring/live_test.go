package monitoring_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/cmd"
	"github.com/flux-order/flux-order/internal/kubetest"
	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/purchasetest"
)

// TestMain starts the redis-server and PostgreSQL the live test's sale uses.
func TestMain(m *testing.M) { purchasetest.Main(m) }

const (
	saleNamespace = "sales"
	poll          = 100 * time.Millisecond
)

// Issue 20, the CloudNativePG #8978 lesson: a real Prometheus (Debian's,
// on loopback) scrapes a real purchase pod (its own Redis and PostgreSQL,
// reporting into a real API server) and the real manager binary, with the
// labels the chart's PodMonitor and ServiceMonitor give them, after a short
// storm. Every vector selector of every alert and every dashboard panel
// must then return at least one series (an alert whose threshold is not
// crossed still has its selectors checked), every expression must
// evaluate, and the manager's sold count must equal the sale's status.
func TestLive_EverySelectorOfTheAlertsAndTheDashboardHasASeries(t *testing.T) {
	promBin := binary(t, "prometheus")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	k8s, kubeconfig := startAPIServer(t)
	const tickets = 40
	cfg, err := purchasetest.NewConfig(ctx, purchasetest.Redis(), purchasetest.Postgres(), "live", tickets)
	if err != nil {
		t.Fatal(err)
	}
	sale := &salesv1alpha1.FlashSale{
		ObjectMeta: metav1.ObjectMeta{Name: cfg.Sale, Namespace: saleNamespace},
		Spec:       salesv1alpha1.FlashSaleSpec{Tickets: tickets},
	}
	for _, o := range []client.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: saleNamespace}}, sale} {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}

	managerAddr := startManager(t, kubeconfig)
	// The reconciler creates the sale's workloads; play the kubelet.
	kubetest.MarkReady(t, k8s, saleNamespace, cfg.Sale+"-redis", &appsv1.Deployment{})
	kubetest.MarkReady(t, k8s, saleNamespace, cfg.Sale+"-postgres", &appsv1.StatefulSet{})
	kubetest.MarkReady(t, k8s, saleNamespace, cfg.Sale+"-purchase", &appsv1.Deployment{})

	// The purchase pod, as `flux-order purchase` runs it: reporting its
	// counts into the FlashSale and following its settings.
	apiAddr, metricsAddr := freeAddr(t), freeAddr(t)
	cfg.Namespace, cfg.ReportStatus, cfg.PodName = saleNamespace, true, "purchase-0"
	cfg.Delivery.File = webhookTo(t, "http://"+freeAddr(t)) // the webhook series (nobody listens: pending)
	cfg.Listen, cfg.MetricsListen = apiAddr, metricsAddr
	t.Setenv("KUBECONFIG", kubeconfig) // the pod's reporter finds the API server there
	podDone := make(chan error, 1)
	go func() { podDone <- purchase.Run(ctx, cfg, purchasetest.Discard()) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-podDone:
		case <-time.After(30 * time.Second):
			t.Error("the purchase pod did not stop within 30 s")
		}
	})
	eventually(t, 30*time.Second, "the purchase pod ready", func() error {
		select {
		case err := <-podDone:
			t.Fatalf("the purchase pod stopped: %v", err)
		default:
		}
		return httpOK("http://" + apiAddr + "/readyz")
	})
	waitSale(t, k8s, sale, "phase OnSale", func(s *salesv1alpha1.FlashSale) bool { return s.Status.Phase == salesv1alpha1.PhaseOnSale })

	// The storm leaves seats unsold: the sale stays OnSale, whose series
	// the alerts select.
	const stormSeats = tickets - 10
	created := storm(t, "http://"+apiAddr, stormSeats)
	waitSale(t, k8s, sale, fmt.Sprintf("status.sold = %d", created), func(s *salesv1alpha1.FlashSale) bool {
		return ptr.Deref(s.Status.Sold, -1) == created
	})

	// Prometheus, with the labels the chart's monitors give: the pod's
	// namespace and flashsale (PodMonitor), the manager's own labels
	// honoured (ServiceMonitor honorLabels).
	prom := startPrometheus(t, promBin, metricsAddr, managerAddr, cfg.Sale)
	saleSel := fmt.Sprintf(`namespace=%q, flashsale=%q`, saleNamespace, cfg.Sale)
	eventually(t, 60*time.Second, "Prometheus to scrape the storm from both targets", func() error {
		for q, want := range map[string]int64{
			`max(flux_order_flashsale_sold{` + saleSel + `})`:                                         created,
			`sum(flux_order_seats_sold_total{` + saleSel + `})`:                                       created,
			`count(rate(flux_order_purchase_requests_total{` + saleSel + `, outcome="created"}[1m]))`: 1,
			`sum(up)`: 2,
		} {
			v, err := prom.scalar(q)
			if err != nil {
				return err
			}
			if v != float64(want) {
				return fmt.Errorf("%s = %v, want %d", q, v, want)
			}
		}
		return nil
	})

	exprs := expressions(t, saleNamespace, cfg.Sale)
	checked := map[string]bool{}
	for _, e := range exprs {
		if _, err := prom.query(e.Expr); err != nil {
			t.Errorf("%s: the expression does not evaluate: %v\n%s", e.Source, err, e.Expr)
		}
		for _, sel := range vectorSelectors(e.Expr) {
			if checked[sel] {
				continue
			}
			checked[sel] = true
			n, err := prom.query(sel)
			switch {
			case err != nil:
				t.Errorf("%s: selector %s: %v", e.Source, sel, err)
			case n == 0:
				t.Errorf("%s: selector %s returns no series: a renamed metric or label, or a series not initialised", e.Source, sel)
			}
		}
	}
	if len(checked) < 20 {
		t.Errorf("only %d selectors checked: the lexer lost some", len(checked))
	}
	t.Logf("%d expressions evaluated, %d selectors checked, %d orders in the storm", len(exprs), len(checked), created)
}

// startAPIServer runs envtest's kube-apiserver and etcd with the CRD, and
// writes a kubeconfig for it.
func startAPIServer(t *testing.T) (client.Client, string) {
	t.Helper()
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(root(t), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		dir := filepath.Join(root(t), "bin", "k8s", "1.37.2")
		if _, err := os.Stat(filepath.Join(dir, "kube-apiserver")); err != nil {
			t.Fatal("envtest needs kube-apiserver and etcd: run `hack/envtest-assets.sh` (make test does) or set KUBEBUILDER_ASSETS")
		}
		env.BinaryAssetsDirectory = dir
	}
	rc, err := env.Start()
	if err != nil {
		t.Fatalf("start envtest: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	k8s, err := client.New(rc, client.Options{Scheme: cmd.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	return k8s, kubeconfig
}

// startManager builds and runs `flux-order manager` (as the chart runs it,
// its metrics over plain HTTP on loopback) and returns its metrics address.
func startManager(t *testing.T, kubeconfig string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "flux-order")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = root(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	addr := freeAddr(t)
	var logs bytes.Buffer
	m := exec.Command(bin, "manager", "--metrics-insecure", "--metrics-bind-address="+addr,
		"--health-probe-bind-address="+freeAddr(t), "--purchase-image=example.com/flux-order:test")
	m.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	m.Stdout, m.Stderr = &logs, &logs
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = m.Process.Kill()
		_ = m.Wait()
		if t.Failed() {
			t.Logf("manager logs:\n%s", tail(logs.String(), 4000))
		}
	})
	eventually(t, 30*time.Second, "the manager's metrics", func() error { return httpOK("http://" + addr + "/metrics") })
	return addr
}

func waitSale(t *testing.T, k8s client.Client, sale *salesv1alpha1.FlashSale, what string, ok func(*salesv1alpha1.FlashSale) bool) {
	t.Helper()
	eventually(t, 60*time.Second, what, func() error {
		s := &salesv1alpha1.FlashSale{}
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(sale), s); err != nil {
			return err
		}
		if !ok(s) {
			return fmt.Errorf("status %+v", s.Status)
		}
		return nil
	})
}

// storm has 32 buyers race for seats 1..seats, ten for each, and returns
// the orders created (201): one a seat.
func storm(t *testing.T, base string, seats int64) int64 {
	t.Helper()
	var created atomic.Int64
	var wg sync.WaitGroup
	c := &http.Client{Timeout: 10 * time.Second}
	next := atomic.Int64{}
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > 10*seats {
					return
				}
				body := fmt.Sprintf(`{"buyerId":"buyer-%d"}`, i)
				resp, err := c.Post(fmt.Sprintf("%s/v1/tickets/%d/purchase", base, i%seats+1), "application/json", strings.NewReader(body))
				if err != nil {
					t.Errorf("purchase: %v", err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode == http.StatusCreated {
					created.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if created.Load() != seats {
		t.Fatalf("the storm sold %d seats, want %d: one order a seat", created.Load(), seats)
	}
	return created.Load()
}

type prometheus struct{ addr string }

// startPrometheus runs Debian's prometheus on a free loopback port,
// scraping the pod and the manager every second.
func startPrometheus(t *testing.T, bin, podAddr, managerAddr, sale string) *prometheus {
	t.Helper()
	dir := t.TempDir()
	conf := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
- job_name: purchase            # the chart's PodMonitor
  static_configs:
  - targets: [%q]
    labels: {namespace: %q, flashsale: %q, pod: purchase-0}
- job_name: manager             # the chart's ServiceMonitor (honorLabels)
  honor_labels: true
  static_configs:
  - targets: [%q]
    labels: {namespace: flux-order-system, pod: manager-0}
`, podAddr, saleNamespace, sale, managerAddr)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &prometheus{addr: freeAddr(t)}
	var logs bytes.Buffer
	c := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+p.addr)
	c.Stdout, c.Stderr = &logs, &logs
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Process.Kill()
		_ = c.Wait()
		if t.Failed() {
			t.Logf("prometheus logs:\n%s", tail(logs.String(), 4000))
		}
	})
	eventually(t, 30*time.Second, "prometheus ready", func() error { return httpOK("http://" + p.addr + "/-/ready") })
	return p
}

// query runs an instant query and returns how many series (or samples) it
// answered.
func (p *prometheus) query(q string) (int, error) {
	res, err := p.do(q)
	if err != nil {
		return 0, err
	}
	return len(res), nil
}

// scalar is the value of a query answering one series (0 when none).
func (p *prometheus) scalar(q string) (float64, error) {
	res, err := p.do(q)
	if err != nil || len(res) == 0 {
		return 0, err
	}
	if len(res) > 1 {
		return 0, fmt.Errorf("%s: %d series, want one", q, len(res))
	}
	var sample struct {
		Value [2]any `json:"value"`
	}
	if err := json.Unmarshal(res[0], &sample); err != nil {
		return 0, err
	}
	s, _ := sample.Value[1].(string)
	return strconv.ParseFloat(s, 64)
}

func (p *prometheus) do(q string) ([]json.RawMessage, error) {
	resp, err := http.Get("http://" + p.addr + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string            `json:"resultType"`
			Result     []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("%s: %w", q, err)
	}
	if body.Status != "success" {
		return nil, errors.New(body.Error)
	}
	if body.Data.ResultType != "vector" {
		return nil, fmt.Errorf("result type %s, want a vector", body.Data.ResultType)
	}
	return body.Data.Result, nil
}

func httpOK(u string) error {
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return nil
}

func freeAddr(t *testing.T) string {
	t.Helper()
	port, err := testservers.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return "127.0.0.1:" + strconv.Itoa(port)
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	testservers.Eventually(t, timeout, poll, what, cond)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// webhookTo writes a webhooks file with one webhook, "platform", of every
// order to url, and returns its path.
func webhookTo(t *testing.T, url string) string {
	t.Helper()
	f := salesv1alpha1.WebhooksFile{Webhooks: []salesv1alpha1.ResolvedWebhook{{
		Name: "platform", URL: url, InsecureHTTP: true, SigningSecrets: []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
		Events: []salesv1alpha1.WebhookEvent{salesv1alpha1.EventOrderConfirmed},
	}}}
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), salesv1alpha1.WebhooksFileKey)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
