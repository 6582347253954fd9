//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flux-order/flux-order/internal/testservers"
)

// Scenario 6: `kubectl scale flashsale/<name> --replicas=3` goes through
// the scale subresource to the purchase Deployment: three ready pods.
func TestScalingASaleWithKubectlGivesThreeReadyPurchasePods(t *testing.T) {
	t.Parallel()
	ns := testNamespace(t, "e2e-scale")
	const name = "scaled"
	startSale(t, ns, name, 50, 2)

	mustKubectl(t, nil, "-n", ns, "scale", "flashsale/"+name, "--replicas=3")
	scaled := time.Now()
	testservers.Eventually(t, 3*time.Minute, pollInterval, "3 ready purchase pods, and the sale's spec and status saying 3", func() error {
		pods, err := salePods(t.Context(), ns, name, "purchase")
		if err != nil {
			return err
		}
		s, err := getSale(t.Context(), ns, name)
		if err != nil {
			return err
		}
		spec := int32(-1)
		if s.Spec.PurchaseAPI.Replicas != nil {
			spec = *s.Spec.PurchaseAPI.Replicas
		}
		if len(pods) != 3 || readyPods(pods) != 3 || spec != 3 || s.Status.ReadyReplicas != 3 {
			return fmt.Errorf("%d purchase pods, %d ready; spec.purchaseAPI.replicas %d; %s", len(pods), readyPods(pods), spec, saleState(s))
		}
		return nil
	})
	t.Logf("TIMING: 3 ready purchase pods %.1fs after kubectl scale", time.Since(scaled).Seconds())

	out := mustKubectl(t, nil, "-n", ns, "get", "flashsales")
	if rows := kubectlTable(out); len(rows) != 1 || rows[0]["READY"] != "3" {
		t.Errorf("kubectl get flashsales: expected READY 3, got:\n%s", out)
	}
	scale := mustKubectl(t, nil, "-n", ns, "get", "flashsale", name, "-o", "jsonpath={.spec.purchaseAPI.replicas}/{.status.replicas}/{.status.selector}")
	t.Logf("spec.purchaseAPI.replicas/status.replicas/status.selector: %s", scale)
}

// Scenario 7: deleting a FlashSale garbage-collects everything it owns
// (its controller owner reference) and keeps its PostgreSQL volume, whose
// orders must outlive the sale.
func TestDeletingASaleRemovesItsObjectsButKeepsItsData_ReCreatingItResumesTheOrders(t *testing.T) {
	t.Parallel()
	ns := testNamespace(t, "e2e-delete")
	const name = "doomed"
	b := startSale(t, ns, name, 50, 2)
	// An order makes the kept volume worth keeping.
	if code, body, err := b.post(t.Context(), "/v1/tickets/1/purchase", `{"buyerId":"alice"}`); err != nil || code != http.StatusCreated {
		t.Fatalf("POST /v1/tickets/1/purchase: expected 201, got %d %s %v", code, body, err)
	}

	sale, err := getSale(t.Context(), ns, name)
	if err != nil {
		t.Fatal(err)
	}
	owned, err := ownedBy(t.Context(), ns, sale.UID)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range owned {
		names = append(names, o.kind+"/"+o.obj.GetName())
	}
	slices.Sort(names)
	t.Logf("owned by flashsale/%s: %s", name, strings.Join(names, ", "))
	for _, want := range []string{
		"Deployment/" + name + "-purchase", "Deployment/" + name + "-redis", "StatefulSet/" + name + "-postgres",
		"Service/" + name + "-purchase", "Service/" + name + "-redis", "Service/" + name + "-postgres",
		"Ingress/" + name, "PodDisruptionBudget/" + name + "-purchase",
		"ServiceAccount/" + name + "-purchase", "Role/" + name + "-purchase", "RoleBinding/" + name + "-purchase",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("expected %s to be owned by the sale (controller owner reference), it is not", want)
		}
	}
	if slices.Contains(names, "Secret/"+name+"-postgres") {
		t.Errorf("expected Secret %s-postgres without an owner (reclaimPolicy Retain: it lives as long as the volume)", name)
	}
	pvcName := "data-" + name + "-postgres-0"
	pvc := &corev1.PersistentVolumeClaim{}
	if err := kube.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: pvcName}, pvc); err != nil {
		t.Fatalf("PVC %s before the deletion: %v", pvcName, err)
	}
	if len(pvc.OwnerReferences) != 0 {
		t.Errorf("expected PVC %s without owner references (retention Retain), got %+v", pvcName, pvc.OwnerReferences)
	}

	start := time.Now()
	mustKubectl(t, nil, "-n", ns, "delete", "flashsale", name, "--timeout=2m")
	deleted := time.Now()
	testservers.Eventually(t, 2*time.Minute, pollInterval, "every object the sale owned, and its pods, deleted", func() error {
		var left []string
		for _, o := range owned {
			done, err := gone(t.Context(), o.obj)
			if err != nil {
				return err
			}
			if !done {
				left = append(left, o.kind+"/"+o.obj.GetName())
			}
		}
		var pods corev1.PodList
		if err := kube.List(t.Context(), &pods, client.InNamespace(ns), client.MatchingLabels{"app.kubernetes.io/instance": name}); err != nil {
			return err
		}
		for _, p := range pods.Items {
			left = append(left, "Pod/"+p.Name)
		}
		if len(left) > 0 {
			return errors.New("still there: " + strings.Join(left, ", "))
		}
		return nil
	})
	t.Logf("TIMING: every owned object and pod gone %.1fs after kubectl delete flashsale (%.1fs of it garbage collection)",
		time.Since(start).Seconds(), time.Since(deleted).Seconds())

	if err := kube.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: pvcName}, pvc); err != nil {
		t.Fatalf("expected PVC %s to outlive its sale, got %v", pvcName, err)
	}
	if pvc.DeletionTimestamp != nil || pvc.Status.Phase != corev1.ClaimBound {
		t.Errorf("expected PVC %s kept and Bound, got phase %s, deletionTimestamp %v", pvcName, pvc.Status.Phase, pvc.DeletionTimestamp)
	}
	if _, err := getSale(t.Context(), ns, name); err == nil {
		t.Errorf("expected flashsale/%s gone after kubectl delete", name)
	}
	if err := kube.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name + "-postgres"}, &corev1.Secret{}); err != nil {
		t.Fatalf("expected the database credentials to outlive the sale with its volume, got %v", err)
	}

	// Re-created with the same name: the same database, so seat 1 is sold.
	b = startSale(t, ns, name, 50, 2)
	if code, body, err := b.post(t.Context(), "/v1/tickets/1/purchase", `{"buyerId":"bob"}`); err != nil || code != http.StatusConflict || !strings.Contains(string(body), "ticket_sold") {
		t.Fatalf("seat 1 of the re-created sale: expected 409 ticket_sold (sold before the deletion), got %d %s %v", code, body, err)
	}
	if code, body, err := b.post(t.Context(), "/v1/tickets/2/purchase", `{"buyerId":"bob"}`); err != nil || code != http.StatusCreated {
		t.Fatalf("seat 2 of the re-created sale: expected 201, got %d %s %v", code, body, err)
	}
}

type ownedObject struct {
	kind string
	obj  client.Object
}

// ownedBy lists the objects of the kinds a sale may own whose owner
// references name uid.
func ownedBy(ctx context.Context, ns string, uid types.UID) ([]ownedObject, error) {
	kinds := []struct {
		kind string
		list client.ObjectList
	}{
		{"Deployment", &appsv1.DeploymentList{}},
		{"StatefulSet", &appsv1.StatefulSetList{}},
		{"Service", &corev1.ServiceList{}},
		{"Secret", &corev1.SecretList{}},
		{"ConfigMap", &corev1.ConfigMapList{}},
		{"ServiceAccount", &corev1.ServiceAccountList{}},
		{"PersistentVolumeClaim", &corev1.PersistentVolumeClaimList{}},
		{"Role", &rbacv1.RoleList{}},
		{"RoleBinding", &rbacv1.RoleBindingList{}},
		{"PodDisruptionBudget", &policyv1.PodDisruptionBudgetList{}},
		{"HorizontalPodAutoscaler", &autoscalingv2.HorizontalPodAutoscalerList{}},
		{"Ingress", &networkingv1.IngressList{}},
	}
	var owned []ownedObject
	for _, k := range kinds {
		if err := kube.List(ctx, k.list, client.InNamespace(ns)); err != nil {
			return nil, fmt.Errorf("list %s: %w", k.kind, err)
		}
		items, err := meta.ExtractList(k.list)
		if err != nil {
			return nil, err
		}
		for _, item := range items {
			obj := item.(client.Object)
			for _, ref := range obj.GetOwnerReferences() {
				if ref.UID == uid {
					owned = append(owned, ownedObject{k.kind, obj})
				}
			}
		}
	}
	return owned, nil
}
