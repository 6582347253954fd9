package controllers

import (
	"context"
	"encoding/json"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/controllers/specs"
)

// HandoverFieldOwner co-owns the purchase Deployment's spec.replicas for
// the moment the operator hands them to an HPA (see handOverReplicas).
const HandoverFieldOwner = "flux-order-handover"

// handOverReplicas moves the purchase Deployment's spec.replicas between
// the operator and an HPA without the count ever jumping:
//
//   - autoscaling turned on: the operator owns replicas by server-side
//     apply, so simply dropping the field would reset it to 1 (the
//     Deployment default) until the HPA acts. Following the documented
//     ownership transfer, HandoverFieldOwner first applies the current
//     count, so that when the operator's next apply drops the field it
//     stays, owned by the handover manager, until the HPA takes it over.
//   - autoscaling turned off: the count the HPA left is written into
//     spec.purchaseAPI.replicas before the Deployment is applied, so the
//     operator takes the field back at that count.
//
// While the sale hibernates the operator holds the replicas at 1 and
// nothing moves; waking up hands them over again if autoscaling is on.
// sale is updated in place when its spec changes.
func (r *FlashSaleReconciler) handOverReplicas(ctx context.Context, sale *salesv1alpha1.FlashSale, hibernating bool) error {
	if hibernating {
		return nil
	}
	dep := &appsv1.Deployment{}
	err := r.Get(ctx, client.ObjectKey{Namespace: sale.Namespace, Name: specs.PurchaseName(sale)}, dep)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	ours := ownsReplicas(dep, FieldOwner)
	switch autoscaling := sale.Spec.PurchaseAPI.Autoscaling != nil; {
	case autoscaling && ours:
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "apps/v1", "kind": "Deployment",
			"metadata": map[string]any{"name": dep.Name, "namespace": dep.Namespace},
			"spec":     map[string]any{"replicas": int64(ptr.Deref(dep.Spec.Replicas, 1))},
		}}
		if err := r.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(HandoverFieldOwner), client.ForceOwnership); err != nil {
			return fmt.Errorf("hand replicas over to the HPA: %w", err)
		}
		r.Recorder.Eventf(sale, nil, corev1.EventTypeNormal, "ReplicasHandedOver", "Reconcile",
			"the HorizontalPodAutoscaler decides the replicas from now on, starting at %d", ptr.Deref(dep.Spec.Replicas, 1))
	case !autoscaling && !ours && dep.Spec.Replicas != nil:
		n := *dep.Spec.Replicas
		if cur := sale.Spec.PurchaseAPI.Replicas; cur != nil && *cur == n {
			return nil
		}
		taken := sale.DeepCopy()
		taken.Spec.PurchaseAPI.Replicas = ptr.To(n)
		if err := r.Patch(ctx, taken, client.MergeFrom(sale), client.FieldOwner(FieldOwner)); err != nil {
			return fmt.Errorf("take the replicas back from the HPA: %w", err)
		}
		r.Recorder.Eventf(taken, nil, corev1.EventTypeNormal, "ReplicasTakenBack", "Reconcile",
			"autoscaling is off: spec.purchaseAPI.replicas keeps the count the HorizontalPodAutoscaler left, %d", n)
		*sale = *taken
	}
	return nil
}

// ownsReplicas reports whether manager owns obj's spec.replicas by
// server-side apply.
func ownsReplicas(obj metav1.Object, manager string) bool {
	for _, mf := range obj.GetManagedFields() {
		if mf.Manager != manager || mf.Operation != metav1.ManagedFieldsOperationApply || mf.FieldsV1 == nil {
			continue
		}
		var fields map[string]map[string]any
		if json.Unmarshal(mf.FieldsV1.Raw, &fields) == nil {
			if _, ok := fields["f:spec"]["f:replicas"]; ok {
				return true
			}
		}
	}
	return false
}
