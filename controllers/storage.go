package controllers

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

// resizeStorage carries a changed spec.postgres.storage.size to the
// database's volume. A StatefulSet's volumeClaimTemplates cannot change, so
// the desired StatefulSet keeps the size it was created with (applying it
// never fails on that) and the claim itself is expanded, when its
// StorageClass allows it. Otherwise the returned error says why not; it is
// reported in Ready (ApplyFailed) while everything else is applied.
func (r *FlashSaleReconciler) resizeStorage(ctx context.Context, sale *salesv1alpha1.FlashSale, sts *appsv1.StatefulSet) error {
	existing := &appsv1.StatefulSet{}
	if err := r.Get(ctx, client.ObjectKeyFromObject(sts), existing); err != nil {
		return client.IgnoreNotFound(err)
	}
	if len(existing.Spec.VolumeClaimTemplates) == 0 || len(sts.Spec.VolumeClaimTemplates) == 0 {
		return nil
	}
	template := &sts.Spec.VolumeClaimTemplates[0]
	want := template.Spec.Resources.Requests[corev1.ResourceStorage]
	template.Spec.Resources.Requests[corev1.ResourceStorage] = existing.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests[corev1.ResourceStorage]

	pvc := &corev1.PersistentVolumeClaim{}
	name := template.Name + "-" + sts.Name + "-0"
	if err := r.Get(ctx, client.ObjectKey{Namespace: sts.Namespace, Name: name}, pvc); err != nil {
		return client.IgnoreNotFound(err) // not created yet
	}
	have := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	switch cmp := want.Cmp(have); {
	case cmp == 0:
		return nil
	case cmp < 0:
		return fmt.Errorf("PersistentVolumeClaim %s: storage cannot shrink from %s to %s; it stays %s", name, have.String(), want.String(), have.String())
	}
	class := ptr.Deref(pvc.Spec.StorageClassName, "")
	if class == "" {
		return fmt.Errorf("PersistentVolumeClaim %s has no StorageClass, so it cannot be expanded to %s; it stays %s", name, want.String(), have.String())
	}
	sc := &storagev1.StorageClass{}
	if err := r.reader().Get(ctx, client.ObjectKey{Name: class}, sc); err != nil {
		switch {
		case apierrors.IsNotFound(err):
			return fmt.Errorf("PersistentVolumeClaim %s: StorageClass %s does not exist, so the volume cannot be expanded to %s; it stays %s", name, class, want.String(), have.String())
		case apierrors.IsForbidden(err):
			return fmt.Errorf("PersistentVolumeClaim %s: the operator may not read StorageClass %s (its chart grants that one cluster-scoped read), so it cannot tell whether the volume can grow to %s; it stays %s", name, class, want.String(), have.String())
		}
		return fmt.Errorf("read StorageClass %s: %w", class, err)
	}
	if !ptr.Deref(sc.AllowVolumeExpansion, false) {
		return fmt.Errorf("PersistentVolumeClaim %s: StorageClass %s does not allow volume expansion (allowVolumeExpansion is not true), so the volume stays %s instead of %s",
			name, class, have.String(), want.String())
	}
	grown := pvc.DeepCopy()
	grown.Spec.Resources.Requests[corev1.ResourceStorage] = want
	if err := r.Patch(ctx, grown, client.MergeFrom(pvc), client.FieldOwner(FieldOwner)); err != nil {
		return fmt.Errorf("expand PersistentVolumeClaim %s to %s: %w", name, want.String(), err)
	}
	r.Recorder.Eventf(sale, nil, corev1.EventTypeNormal, "VolumeExpanding", "Reconcile", "expanding PersistentVolumeClaim %s from %s to %s", name, have.String(), want.String())
	return nil
}
