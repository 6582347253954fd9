package chart_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/flux-order/flux-order/internal/testservers"
)

// crdFile is the chart's CRD, what docs/install.md applies before an upgrade.
const crdFile = "crds/sales.fluxorder.io_flashsales.yaml"

// Issue 21, defect 9: `kubectl apply --server-side -f crds/` over the CRD
// that Helm created (Helm installs crds/ on the first install, as field
// manager "helm") conflicts with Helm's ownership of every field that
// changed; the documented step adds --force-conflicts. On a real
// kube-apiserver: the real helm CLI installs a release whose CRD is the
// previous one (testdata/previous-crd.yaml, the CRD before
// spec.datastoreUpdates) and a sale is created; the CRD is then applied as
// kubectl applies it (field manager "kubectl", server-side), first without
// and then with --force-conflicts; then `helm upgrade` to this chart.
func TestCRDUpgrade_OverHelmsCRD_TheDocumentedCommandWorks(t *testing.T) {
	ctx := context.Background()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		dir := filepath.Join(root(t), "bin", "k8s", "1.37.2")
		if _, err := os.Stat(filepath.Join(dir, "kube-apiserver")); err != nil {
			t.Fatal("envtest needs kube-apiserver and etcd: run `hack/envtest-assets.sh` (or `make test`) or set KUBEBUILDER_ASSETS")
		}
		t.Setenv("KUBEBUILDER_ASSETS", dir)
	}
	env := &envtest.Environment{}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	admin, err := env.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kubeconfigPath := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	helm := func(args ...string) {
		t.Helper()
		cmd := exec.Command(helmBin(t), append(args, "--kubeconfig", kubeconfigPath, "--namespace", namespace)...)
		cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+dir, "HELM_CONFIG_HOME="+dir, "HELM_DATA_HOME="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	k8s, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}

	// The previous release: a chart whose crds/ holds the previous CRD.
	previous := filepath.Join(dir, "previous")
	if err := os.MkdirAll(filepath.Join(previous, "crds"), 0o755); err != nil {
		t.Fatal(err)
	}
	crd, err := os.ReadFile(filepath.Join(root(t), "test", "chart", "testdata", "previous-crd.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"Chart.yaml": []byte("apiVersion: v2\nname: flux-order\nversion: 0.0.1\n"),
		crdFile:      crd,
	} {
		if err := os.WriteFile(filepath.Join(previous, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	helm("install", release, previous, "--create-namespace")

	sales := schema.GroupVersionKind{Group: "sales.fluxorder.io", Version: "v1alpha1", Kind: "FlashSale"}
	sale := &unstructured.Unstructured{Object: map[string]any{"metadata": map[string]any{"name": "before", "namespace": namespace},
		"spec": map[string]any{"tickets": int64(10)}}}
	sale.SetGroupVersionKind(sales)
	testservers.Eventually(t, 10*time.Second, 100*time.Millisecond, "a sale under the previous CRD", func() error { return k8s.Create(ctx, sale) })

	// The new CRD, as `kubectl apply --server-side -f crds/` sends it.
	raw, err := os.ReadFile(filepath.Join(root(t), chartDir, crdFile))
	if err != nil {
		t.Fatal(err)
	}
	applyCRD := func(force bool) error {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(raw, &u.Object); err != nil {
			t.Fatal(err)
		}
		opts := []client.ApplyOption{client.FieldOwner("kubectl")}
		if force {
			opts = append(opts, client.ForceOwnership)
		}
		return k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), opts...)
	}
	if err := applyCRD(false); !apierrors.IsConflict(err) || !strings.Contains(err.Error(), `"helm"`) {
		t.Fatalf("without --force-conflicts: want the conflict with Helm's field manager, got %v", err)
	}
	if err := applyCRD(true); err != nil {
		t.Fatalf("kubectl apply --server-side --force-conflicts: %v", err)
	}
	// The new schema is served: the sale made before gets its new default.
	testservers.Eventually(t, 10*time.Second, 100*time.Millisecond, "the sale read through the new CRD", func() error {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(sales)
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(sale), got); err != nil {
			return err
		}
		if v, _, _ := unstructured.NestedString(got.Object, "spec", "datastoreUpdates"); v != "Deferred" {
			return fmt.Errorf("spec.datastoreUpdates %q, want the new CRD's default Deferred", v)
		}
		return nil
	})

	// Then the chart itself; Helm leaves the CRD as applied.
	helm("upgrade", release, filepath.Join(root(t), chartDir))
	got := &unstructured.Unstructured{}
	got.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
	if err := k8s.Get(ctx, client.ObjectKey{Name: "flashsales.sales.fluxorder.io"}, got); err != nil {
		t.Fatal(err)
	}
	versions, _, _ := unstructured.NestedSlice(got.Object, "spec", "versions")
	if len(versions) == 0 || !strings.Contains(fmt.Sprint(versions[0]), "datastoreUpdates") {
		t.Fatal("after helm upgrade the CRD must still be the new one")
	}
}
