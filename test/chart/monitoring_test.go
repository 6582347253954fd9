package chart_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/controllers/specs"
	"github.com/flux-order/flux-order/internal/testservers"
)

// monitoringCRDs says the cluster serves prometheus-operator's kinds.
var monitoringCRDs = []string{
	"--api-versions", "monitoring.coreos.com/v1/PodMonitor",
	"--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
	"--api-versions", "monitoring.coreos.com/v1/PrometheusRule",
}

var allMonitoring = []string{
	"monitoring.podMonitor.enabled=true", "monitoring.serviceMonitor.enabled=true",
	"monitoring.prometheusRule.enabled=true", "monitoring.grafanaDashboard.enabled=true",
}

func renderMonitoring(t *testing.T, sets ...string) []object {
	t.Helper()
	return renderChart(t, filepath.Join(root(t), chartDir), monitoringCRDs, append(slices.Clone(allMonitoring), sets...)...)
}

// The prometheus-operator objects, as far as the tests read them.
type podMonitor struct {
	Spec struct {
		NamespaceSelector struct {
			Any        bool     `json:"any"`
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port        string `json:"port"`
			Path        string `json:"path"`
			Interval    string `json:"interval"`
			Relabelings []struct {
				SourceLabels []string `json:"sourceLabels"`
				TargetLabel  string   `json:"targetLabel"`
			} `json:"relabelings"`
		} `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

type serviceMonitor struct {
	Spec struct {
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port            string         `json:"port"`
			Scheme          string         `json:"scheme"`
			Path            string         `json:"path"`
			HonorLabels     bool           `json:"honorLabels"`
			BearerTokenFile string         `json:"bearerTokenFile"`
			Authorization   map[string]any `json:"authorization"`
			TLSConfig       map[string]any `json:"tlsConfig"`
		} `json:"endpoints"`
	} `json:"spec"`
}

type rule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []rule `json:"rules"`
	} `json:"groups"`
}

func decode(t *testing.T, o object, v any) {
	t.Helper()
	if err := yaml.Unmarshal(o.raw, v); err != nil {
		t.Fatalf("%s %s: %v", o.Kind, o.Name, err)
	}
}

// Issue 20: each monitoring object is off by default.
func TestMonitoring_OffByDefault(t *testing.T) {
	for _, o := range renderChart(t, filepath.Join(root(t), chartDir), monitoringCRDs) {
		if o.Kind == "PodMonitor" || o.Kind == "ServiceMonitor" || o.Kind == "PrometheusRule" ||
			(o.Kind == "ConfigMap" && strings.HasSuffix(o.Name, "-dashboard")) {
			t.Errorf("%s %s rendered with monitoring off", o.Kind, o.Name)
		}
	}
}

// Without prometheus-operator's CRDs the chart installs none of its kinds
// (the install would fail), and the NOTES say which were skipped.
func TestMonitoring_CRDsMissing_SkippedAndTheNotesSaySo(t *testing.T) {
	objs := renderChart(t, filepath.Join(root(t), chartDir), nil, allMonitoring...)
	for _, o := range objs {
		if o.Kind == "PodMonitor" || o.Kind == "ServiceMonitor" || o.Kind == "PrometheusRule" {
			t.Errorf("%s rendered on a cluster without its CRD", o.Kind)
		}
	}
	find(t, objs, "ConfigMap", "flux-order-dashboard") // a plain ConfigMap needs no CRD
	notes := renderNotes(t, nil, allMonitoring...)
	for _, kind := range []string{"PodMonitor", "ServiceMonitor", "PrometheusRule"} {
		if !strings.Contains(notes, kind+" SKIPPED: the cluster has no "+kind+" CRD") {
			t.Errorf("NOTES do not say the %s was skipped:\n%s", kind, notes)
		}
	}
	notes = renderNotes(t, monitoringCRDs, allMonitoring...)
	if strings.Contains(notes, "SKIPPED") || !strings.Contains(notes, "PodMonitor installed") {
		t.Errorf("NOTES with the CRDs served:\n%s", notes)
	}
	for _, want := range []string{"every namespace", "kubernetes.io/metadata.name=monitoring", "flux-order-metrics-reader"} {
		if !strings.Contains(notes, want) {
			t.Errorf("NOTES lack %q:\n%s", want, notes)
		}
	}
	if notes := renderNotes(t, monitoringCRDs, append(slices.Clone(allMonitoring), "watchNamespaces={sales-a,sales-b}")...); !strings.Contains(notes, "scraped in sales-a, sales-b") {
		t.Errorf("NOTES do not name the watched namespaces:\n%s", notes)
	}
}

// renderNotes renders NOTES.txt (helm template does not print it) through
// a copy of the chart with one more template that includes it.
func renderNotes(t *testing.T, flags []string, sets ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "flux-order")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(root(t), chartDir))); err != nil {
		t.Fatal(err)
	}
	const notes = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: {{ include \"flux-order/templates/NOTES.txt\" . | toJson }}\n"
	if err := os.WriteFile(filepath.Join(dir, "templates", "zz-notes.yaml"), []byte(notes), 0o644); err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	find(t, renderChart(t, dir, flags, sets...), "ConfigMap", "notes").into(t, &cm)
	return cm.Data["notes"]
}

// The PodMonitor selects exactly the purchase pods the operator creates,
// on their metrics port, and names the sale flashsale as the manager's
// series do.
func TestPodMonitor_SelectsThePurchasePods_OnTheirMetricsPort_LabelledBySale(t *testing.T) {
	var pm podMonitor
	decode(t, find(t, renderMonitoring(t), "PodMonitor", "flux-order-purchase"), &pm)
	sale := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: "eras-tour", Namespace: "sales"}, Spec: salesv1alpha1.FlashSaleSpec{Tickets: 10}}
	pod := specs.PurchaseDeployment(sale, specs.Options{PurchaseImage: "x:1"}).Spec.Template
	sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if sel.Empty() || !sel.Matches(labelSet(pod.Labels)) {
		t.Errorf("selector %v does not match the purchase pods' labels %v", pm.Spec.Selector, pod.Labels)
	}
	for _, component := range []string{specs.ComponentRedis, specs.ComponentPostgres} {
		if sel.Matches(labelSet(specs.SelectorLabels(sale, component))) {
			t.Errorf("selector %v also matches the sale's %s pods", pm.Spec.Selector, component)
		}
	}
	if !pm.Spec.NamespaceSelector.Any {
		t.Errorf("namespaceSelector %+v: without watchNamespaces every namespace", pm.Spec.NamespaceSelector)
	}
	if len(pm.Spec.Endpoints) != 1 {
		t.Fatalf("endpoints %+v, want one", pm.Spec.Endpoints)
	}
	ep := pm.Spec.Endpoints[0]
	var port int32
	for _, p := range pod.Spec.Containers[0].Ports {
		if p.Name == ep.Port {
			port = p.ContainerPort
		}
	}
	if port != specs.MetricsPort || ep.Path != "/metrics" {
		t.Errorf("endpoint port %q (container port %d) path %q, want the metrics port %d, /metrics", ep.Port, port, ep.Path, specs.MetricsPort)
	}
	relabelled := false
	for _, r := range ep.Relabelings {
		if r.TargetLabel == "flashsale" && slices.Equal(r.SourceLabels, []string{"__meta_kubernetes_pod_label_app_kubernetes_io_instance"}) {
			relabelled = true
		}
	}
	if pod.Labels["app.kubernetes.io/instance"] != sale.Name || !relabelled {
		t.Errorf("relabelings %+v: want the pod label app.kubernetes.io/instance (%q) into flashsale", ep.Relabelings, pod.Labels["app.kubernetes.io/instance"])
	}

	pm = podMonitor{}
	decode(t, find(t, renderMonitoring(t, "watchNamespaces={sales-a,sales-b}"), "PodMonitor", "flux-order-purchase"), &pm)
	if pm.Spec.NamespaceSelector.Any || !slices.Equal(pm.Spec.NamespaceSelector.MatchNames, []string{"sales-a", "sales-b"}) {
		t.Errorf("namespaceSelector %+v, want the watched namespaces", pm.Spec.NamespaceSelector)
	}
}

type labelSet map[string]string

func (l labelSet) Has(k string) bool              { _, ok := l[k]; return ok }
func (l labelSet) Get(k string) string            { return l[k] }
func (l labelSet) Lookup(k string) (string, bool) { v, ok := l[k]; return v, ok }

// The ServiceMonitor reaches the manager's metrics Service over HTTPS with
// a bearer token, keeps the sale series' own namespace label, and the
// chart can bind the metrics-reader role to Prometheus.
func TestServiceMonitor_ScrapesTheManagersSecureEndpoint(t *testing.T) {
	objs := renderMonitoring(t, "monitoring.serviceMonitor.prometheusServiceAccount.name=prometheus",
		"monitoring.serviceMonitor.prometheusServiceAccount.namespace=monitoring")
	var sm serviceMonitor
	decode(t, find(t, objs, "ServiceMonitor", "flux-order-manager"), &sm)
	svc := &corev1.Service{}
	find(t, objs, "Service", "flux-order-manager-metrics").into(t, svc)
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if sel.Empty() || !sel.Matches(labelSet(svc.Labels)) || !slices.Equal(sm.Spec.NamespaceSelector.MatchNames, []string{namespace}) {
		t.Errorf("selector %v in %v does not pick the metrics Service (labels %v, namespace %s)", sm.Spec.Selector, sm.Spec.NamespaceSelector.MatchNames, svc.Labels, namespace)
	}
	if len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("endpoints %+v", sm.Spec.Endpoints)
	}
	ep := sm.Spec.Endpoints[0]
	if ep.Port != svc.Spec.Ports[0].Name || ep.Scheme != "https" || ep.Path != "/metrics" || !ep.HonorLabels ||
		ep.BearerTokenFile != "/var/run/secrets/kubernetes.io/serviceaccount/token" || ep.TLSConfig["insecureSkipVerify"] != true {
		t.Errorf("endpoint %+v: want port %q, https, /metrics, honorLabels, the ServiceAccount token, the self-signed certificate accepted", ep, svc.Spec.Ports[0].Name)
	}
	var crb rbacv1.ClusterRoleBinding
	find(t, objs, "ClusterRoleBinding", "flux-order-metrics-reader").into(t, &crb)
	find(t, objs, "ClusterRole", crb.RoleRef.Name)
	if crb.RoleRef.Name != "flux-order-metrics-reader" || !reflect.DeepEqual(crb.Subjects, []rbacv1.Subject{{Kind: "ServiceAccount", Name: "prometheus", Namespace: "monitoring"}}) {
		t.Errorf("binding %+v", crb)
	}

	sm = serviceMonitor{}
	decode(t, find(t, renderMonitoring(t, "monitoring.serviceMonitor.bearerTokenSecret.name=prom-token"), "ServiceMonitor", "flux-order-manager"), &sm)
	want := map[string]any{"type": "Bearer", "credentials": map[string]any{"name": "prom-token", "key": "token"}}
	if ep := sm.Spec.Endpoints[0]; !reflect.DeepEqual(ep.Authorization, want) || ep.BearerTokenFile != "" {
		t.Errorf("with a token Secret: authorization %v, bearerTokenFile %q; want %v only", ep.Authorization, ep.BearerTokenFile, want)
	}

	cmd := exec.Command(helmBin(t), append([]string{"template", release, filepath.Join(root(t), chartDir), "--set", "monitoring.serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false"}, monitoringCRDs...)...)
	if out, err := cmd.CombinedOutput(); err == nil || !bytes.Contains(out, []byte("metrics.service.enabled")) {
		t.Errorf("a ServiceMonitor without the metrics Service must fail the render naming metrics.service.enabled: %v\n%s", err, out)
	}
}

// alertFiles reads files/alerts: one alert per file, named after it.
func alertFiles(t *testing.T) map[string]rule {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(root(t), chartDir, "files/alerts/*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no alert files (%v)", err)
	}
	alerts := map[string]rule{}
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var f ruleFile
		if err := yaml.UnmarshalStrict(raw, &f); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if len(f.Groups) != 1 || len(f.Groups[0].Rules) != 1 {
			t.Fatalf("%s: want one group of one alert, got %+v", p, f.Groups)
		}
		r := f.Groups[0].Rules[0]
		if name := strings.TrimSuffix(filepath.Base(p), ".yaml"); r.Alert != name {
			t.Errorf("%s holds alert %q: name the file after its alert", p, r.Alert)
		}
		alerts[r.Alert] = r
	}
	return alerts
}

// Every alert has a for:, a severity and a runbook_url pointing to its own
// section of docs/runbooks.md, which exists.
func TestAlerts_ForSeverityAndARunbookSection(t *testing.T) {
	runbooks, err := os.ReadFile(filepath.Join(root(t), "docs/runbooks.md"))
	if err != nil {
		t.Fatal(err)
	}
	const base = "https://github.com/flux-order/flux-order/blob/main/docs/runbooks.md#"
	for name, r := range alertFiles(t) {
		if r.For == "" {
			t.Errorf("%s has no for:", name)
		}
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("%s: severity %q, want critical or warning", name, s)
		}
		if want := base + strings.ToLower(name); r.Annotations["runbook_url"] != want {
			t.Errorf("%s: runbook_url %q, want %q", name, r.Annotations["runbook_url"], want)
		}
		if !bytes.Contains(runbooks, []byte("\n## "+name+"\n")) {
			t.Errorf("docs/runbooks.md has no section \"## %s\"", name)
		}
		if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
			t.Errorf("%s: want a summary and a description", name)
		}
	}
}

// The PrometheusRule holds every alert of files/alerts as written, with the
// values' runbook base, extra labels and disabled alerts applied.
func TestPrometheusRule_RendersEveryAlertFile(t *testing.T) {
	files := alertFiles(t)
	var pr struct {
		Spec ruleFile `json:"spec"`
	}
	decode(t, find(t, renderMonitoring(t), "PrometheusRule", "flux-order"), &pr)
	rendered := map[string]rule{}
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			rendered[r.Alert] = r
		}
	}
	if !reflect.DeepEqual(rendered, files) {
		t.Errorf("rendered rules differ from files/alerts:\n got %+v\nwant %+v", rendered, files)
	}

	pr.Spec = ruleFile{}
	decode(t, find(t, renderMonitoring(t, "monitoring.prometheusRule.runbookBaseURL=https://wiki.example.com/flux",
		"monitoring.prometheusRule.additionalRuleLabels.team=tickets", "monitoring.prometheusRule.disabledAlerts={FluxOrderQueueStalled}"),
		"PrometheusRule", "flux-order"), &pr)
	n := 0
	for _, r := range pr.Spec.Groups[0].Rules {
		n++
		if r.Alert == "FluxOrderQueueStalled" {
			t.Error("a disabled alert was rendered")
		}
		if want := "https://wiki.example.com/flux#" + strings.ToLower(r.Alert); r.Annotations["runbook_url"] != want {
			t.Errorf("%s: runbook_url %q, want %q", r.Alert, r.Annotations["runbook_url"], want)
		}
		if r.Labels["team"] != "tickets" || r.Labels["severity"] != files[r.Alert].Labels["severity"] {
			t.Errorf("%s: labels %v, want team=tickets beside the severity", r.Alert, r.Labels)
		}
	}
	if n != len(files)-1 {
		t.Errorf("%d rules rendered, want %d (all but the disabled one)", n, len(files)-1)
	}
}

// promtool accepts the rules exactly as the chart renders them.
func TestPrometheusRule_PromtoolChecksTheRenderedRules(t *testing.T) {
	promtool, err := testservers.PrometheusBinary("promtool")
	if err != nil {
		t.Fatal(err) // names `apt-get install -y prometheus` (make test-deps does it)
	}
	var pr struct {
		Spec json.RawMessage `json:"spec"`
	}
	decode(t, find(t, renderMonitoring(t), "PrometheusRule", "flux-order"), &pr)
	file := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(file, pr.Spec, 0o644); err != nil { // JSON is YAML
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", file).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules on the rendered PrometheusRule: %v\n%s", err, out)
	}
}

// The dashboard ConfigMap carries the sidecar's label (configurable) and
// the dashboard file as is.
func TestGrafanaDashboard_ConfigMapForTheSidecar(t *testing.T) {
	want, err := os.ReadFile(filepath.Join(root(t), chartDir, "files/dashboards/flux-order.json"))
	if err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{}
	find(t, renderMonitoring(t), "ConfigMap", "flux-order-dashboard").into(t, cm)
	if cm.Labels["grafana_dashboard"] != "1" || cm.Namespace != namespace {
		t.Errorf("labels %v in %s, want grafana_dashboard=1 in %s", cm.Labels, cm.Namespace, namespace)
	}
	if got := cm.Data["flux-order.json"]; got != strings.TrimRight(string(want), "\n") {
		t.Errorf("the ConfigMap's dashboard differs from files/dashboards/flux-order.json")
	}
	cm = &corev1.ConfigMap{}
	find(t, renderMonitoring(t, "monitoring.grafanaDashboard.label=dashboards", "monitoring.grafanaDashboard.labelValue=flux",
		"monitoring.grafanaDashboard.namespace=grafana"), "ConfigMap", "flux-order-dashboard").into(t, cm)
	if cm.Labels["dashboards"] != "flux" || cm.Labels["grafana_dashboard"] != "" || cm.Namespace != "grafana" {
		t.Errorf("labels %v in %s, want dashboards=flux in grafana", cm.Labels, cm.Namespace)
	}
}
