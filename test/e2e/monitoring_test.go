//go:build e2e

package e2e

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/internal/testservers"
)

// release is the Helm release make deploy installs (RELEASE).
var release = env("RELEASE", "flux-order")

// Issue 20: the chart is installed with monitoring on (make deploy applies
// prometheus-operator's CRDs from its Go module). No Prometheus runs in
// the cluster, so what a Prometheus would do is checked against the live
// objects: the PodMonitor selects the sale's purchase pods and names a port
// they have, the ServiceMonitor selects the manager's metrics Service and
// its port, the rules and the dashboard are there, and the manager's
// metrics (read as Prometheus would, with a token bound to the chart's
// metrics-reader role) show the sale's sold count equal to its status.
func TestMonitoringObjectsMatchTheLivePods_ManagerMetricsShowTheStatus(t *testing.T) {
	t.Parallel()
	ns := testNamespace(t, "e2e-mon")
	const name = "watched"
	b := startSale(t, ns, name, 20, 2)
	ctx := t.Context()

	t.Run("the PodMonitor selects the purchase pods on a port they have", func(t *testing.T) {
		pm := monitoringObject(t, "PodMonitor", release+"-purchase")
		sel := selectorOf(t, pm, "spec", "selector")
		pods, err := salePods(ctx, ns, name, "purchase")
		if err != nil || len(pods) == 0 {
			t.Fatalf("purchase pods of %s: %d (%v)", name, len(pods), err)
		}
		endpoints, _, _ := unstructured.NestedSlice(pm.Object, "spec", "podMetricsEndpoints")
		if len(endpoints) == 0 {
			t.Fatal("the PodMonitor has no podMetricsEndpoints")
		}
		port, _, _ := unstructured.NestedString(endpoints[0].(map[string]any), "port")
		for _, p := range pods {
			if !sel.Matches(labels.Set(p.Labels)) {
				t.Errorf("pod %s (labels %v) is not selected by the PodMonitor's %s", p.Name, p.Labels, sel)
			}
			if !hasContainerPort(&p, port) {
				t.Errorf("pod %s has no container port named %q (the PodMonitor's)", p.Name, port)
			}
		}
		if all, _, _ := unstructured.NestedBool(pm.Object, "spec", "namespaceSelector", "any"); !all {
			names, _, _ := unstructured.NestedStringSlice(pm.Object, "spec", "namespaceSelector", "matchNames")
			t.Errorf("the PodMonitor does not reach namespace %s (namespaceSelector matchNames %v)", ns, names)
		}
	})

	t.Run("the ServiceMonitor selects the manager's metrics Service and its port", func(t *testing.T) {
		sm := monitoringObject(t, "ServiceMonitor", release+"-manager")
		sel := selectorOf(t, sm, "spec", "selector")
		svc := &corev1.Service{}
		if err := kube.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: release + "-manager-metrics"}, svc); err != nil {
			t.Fatal(err)
		}
		if !sel.Matches(labels.Set(svc.Labels)) {
			t.Errorf("Service %s (labels %v) is not selected by the ServiceMonitor's %s", svc.Name, svc.Labels, sel)
		}
		endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
		if len(endpoints) == 0 {
			t.Fatal("the ServiceMonitor has no endpoints")
		}
		port, _, _ := unstructured.NestedString(endpoints[0].(map[string]any), "port")
		found := false
		for _, p := range svc.Spec.Ports {
			found = found || p.Name == port
		}
		if !found {
			t.Errorf("Service %s has no port named %q (the ServiceMonitor's)", svc.Name, port)
		}
	})

	t.Run("the rules and the dashboard are installed", func(t *testing.T) {
		rule := monitoringObject(t, "PrometheusRule", release)
		groups, _, _ := unstructured.NestedSlice(rule.Object, "spec", "groups")
		alerts := 0
		for _, g := range groups {
			rules, _, _ := unstructured.NestedSlice(g.(map[string]any), "rules")
			alerts += len(rules)
		}
		if alerts < 9 {
			t.Errorf("the PrometheusRule has %d alerts, want the chart's (at least 9)", alerts)
		}
		cms := &corev1.ConfigMapList{}
		if err := kube.List(ctx, cms, client.InNamespace(operatorNamespace), client.MatchingLabels{"grafana_dashboard": "1"}); err != nil || len(cms.Items) != 1 {
			t.Fatalf("want one dashboard ConfigMap labelled grafana_dashboard=1, got %d (%v)", len(cms.Items), err)
		}
	})

	t.Run("the manager's metrics show the sold count of the status", func(t *testing.T) {
		for seat := 1; seat <= 3; seat++ {
			code, body, err := b.post(ctx, fmt.Sprintf("/v1/tickets/%d/purchase", seat), fmt.Sprintf(`{"buyerId":"mon-%d"}`, seat))
			if err != nil || code != http.StatusCreated {
				t.Fatalf("buy seat %d: %d %s %v", seat, code, body, err)
			}
		}
		waitSale(t, ns, name, time.Minute, "3 sold in the status", func(s *salesv1alpha1.FlashSale) bool {
			return s.Status.Sold != nil && *s.Status.Sold == 3
		})
		token := metricsReaderToken(t, ns)
		url := "https://127.0.0.1:" + forwardedPort(t, operatorNamespace, managerPod(t), 8443) + "/metrics"
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the manager's self-signed certificate, as the ServiceMonitor
		}}
		series := regexp.MustCompile(`(?m)^flux_order_flashsale_sold\{[^}]*\}\s+(\S+)$`)
		testservers.Eventually(t, time.Minute, pollInterval, "the manager's flux_order_flashsale_sold of "+ns+"/"+name+" to be 3", func() error {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("GET /metrics: %s %s", resp.Status, raw)
			}
			for _, line := range strings.Split(string(raw), "\n") {
				if !strings.Contains(line, `namespace="`+ns+`"`) || !strings.Contains(line, `flashsale="`+name+`"`) {
					continue
				}
				if m := series.FindStringSubmatch(line); m != nil {
					if v, _ := strconv.ParseFloat(m[1], 64); v == 3 {
						return nil
					}
					return fmt.Errorf("%s", line)
				}
			}
			return fmt.Errorf("no flux_order_flashsale_sold series of %s/%s", ns, name)
		})
	})
}

// monitoringObject reads a monitoring.coreos.com/v1 object of the release.
func monitoringObject(t *testing.T, kind, name string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1", Kind: kind})
	if err := kube.Get(t.Context(), client.ObjectKey{Namespace: operatorNamespace, Name: name}, u); err != nil {
		t.Fatalf("%s %s/%s (make deploy installs the chart with monitoring on): %v", kind, operatorNamespace, name, err)
	}
	return u
}

// selectorOf reads a metav1.LabelSelector at path in u.
func selectorOf(t *testing.T, u *unstructured.Unstructured, path ...string) labels.Selector {
	t.Helper()
	raw, ok, _ := unstructured.NestedMap(u.Object, path...)
	if !ok {
		t.Fatalf("%s %s has no %s", u.GetKind(), u.GetName(), strings.Join(path, "."))
	}
	var ls metav1.LabelSelector
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &ls); err != nil {
		t.Fatal(err)
	}
	sel, err := metav1.LabelSelectorAsSelector(&ls)
	if err != nil || sel.Empty() {
		t.Fatalf("%s %s: selector %v (%v) would select everything or nothing", u.GetKind(), u.GetName(), raw, err)
	}
	return sel
}

func hasContainerPort(p *corev1.Pod, name string) bool {
	for _, c := range p.Spec.Containers {
		for _, port := range c.Ports {
			if port.Name == name {
				return true
			}
		}
	}
	return false
}

// managerPod is a running manager pod (every replica serves /metrics).
func managerPod(t *testing.T) string {
	t.Helper()
	pods := &corev1.PodList{}
	if err := kube.List(t.Context(), pods, client.InNamespace(operatorNamespace),
		client.MatchingLabels{"app.kubernetes.io/component": "manager"}); err != nil {
		t.Fatal(err)
	}
	for i := range pods.Items {
		if podReady(&pods.Items[i]) {
			return pods.Items[i].Name
		}
	}
	t.Fatalf("no ready manager pod in %s", operatorNamespace)
	return ""
}

// metricsReaderToken is a token of a ServiceAccount of ns bound to the
// chart's ClusterRole <release>-metrics-reader, as a Prometheus would hold.
func metricsReaderToken(t *testing.T, ns string) string {
	t.Helper()
	ctx := t.Context()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "prometheus"}}
	if err := kube.Create(ctx, sa); err != nil {
		t.Fatal(err)
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: ns + "-metrics-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: release + "-metrics-reader"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: sa.Name}},
	}
	if err := kube.Create(ctx, crb); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kube.Delete(t.Context(), crb) })
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptrTo(int64(600))}}
	if err := kube.SubResource("token").Create(ctx, sa, tr); err != nil {
		t.Fatalf("TokenRequest for %s/%s: %v", ns, sa.Name, err)
	}
	return tr.Status.Token
}

func ptrTo[T any](v T) *T { return &v }
