package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/controllers/specs"
	"github.com/flux-order/flux-order/internal/testservers"
)

// saleOnVolume creates, in a new namespace, a StorageClass (expandable or
// not) and a 1Gi sale named name on it, waits for its StatefulSet and plays
// the StatefulSet controller: the claim of pod 0. spec, when not nil,
// adjusts the sale before it is created.
func saleOnVolume(t *testing.T, name string, expandable bool, spec func(*salesv1alpha1.FlashSaleSpec)) (*salesv1alpha1.FlashSale, *storagev1.StorageClass, *appsv1.StatefulSet) {
	t.Helper()
	ctx := context.Background()
	ns := newNamespace(t)
	class := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name + "-" + ns}, Provisioner: "example.com/none", AllowVolumeExpansion: ptr.To(expandable)}
	if err := k8s.Create(ctx, class); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), class) })
	size := resource.MustParse("1Gi")
	sale := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: salesv1alpha1.FlashSaleSpec{
		Tickets: 10, Postgres: salesv1alpha1.PostgresSpec{Storage: &salesv1alpha1.StorageSpec{Size: &size, StorageClassName: ptr.To(class.Name)}}}}
	if spec != nil {
		spec(&sale.Spec)
	}
	if err := k8s.Create(ctx, sale); err != nil {
		t.Fatal(err)
	}
	sts := &appsv1.StatefulSet{}
	testservers.Eventually(t, 10*time.Second, poll, "postgres StatefulSet", func() error { return get(t, ns, name+"-postgres", sts) })
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "data-" + name + "-postgres-0", Namespace: ns,
		Labels: specs.Labels(sale, specs.ComponentPostgres)}, Spec: corev1.PersistentVolumeClaimSpec{
		AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, StorageClassName: ptr.To(class.Name),
		Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}}}}
	if err := k8s.Create(ctx, pvc); err != nil {
		t.Fatal(err)
	}
	return sale, class, sts
}

func TestReconcile_FailingStorageChange_LaterEditsStillApplied_ReadySaysWhy(t *testing.T) {
	sale, _, _ := saleOnVolume(t, "disk", false, nil)
	ns := sale.Namespace

	patchSpec(t, sale, func(s *salesv1alpha1.FlashSale) {
		s.Spec.Postgres.Storage.Size = ptr.To(resource.MustParse("2Gi"))
		s.Spec.PurchaseAPI.Replicas = ptr.To[int32](3)
	})
	testservers.Eventually(t, 10*time.Second, poll, "the replicas change applied and Ready saying why the volume did not grow", func() error {
		dep := &appsv1.Deployment{}
		if err := get(t, ns, "disk-purchase", dep); err != nil {
			return err
		}
		if r := ptr.Deref(dep.Spec.Replicas, 0); r != 3 {
			return fmt.Errorf("purchase replicas %d, want 3: a failing object blocked a later one", r)
		}
		s := saleNow(t, sale)
		c := meta.FindStatusCondition(s.Status.Conditions, salesv1alpha1.ConditionReady)
		if s.Status.ObservedGeneration != s.Generation || c == nil || c.Status != metav1.ConditionFalse || c.Reason != "ApplyFailed" ||
			!strings.Contains(c.Message, "data-disk-postgres-0") || !strings.Contains(c.Message, "does not allow volume expansion") {
			return fmt.Errorf("observedGeneration %d/%d, Ready %+v", s.Status.ObservedGeneration, s.Generation, c)
		}
		return nil
	})
	sts := &appsv1.StatefulSet{}
	if err := get(t, ns, "disk-postgres", sts); err != nil {
		t.Fatal(err)
	}
	if q := sts.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests[corev1.ResourceStorage]; q.String() != "1Gi" {
		t.Errorf("the StatefulSet's claim template is immutable; it must keep 1Gi, has %s", q.String())
	}

	// Changing the class is refused by the API server.
	if err := tryUpdate(t, sale, func(s *salesv1alpha1.FlashSale) { s.Spec.Postgres.Storage.StorageClassName = ptr.To("other") }); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "storageClassName cannot change") {
		t.Fatalf("changing the storage class: want the CEL refusal, got %v", err)
	}
}

func TestValidation_SwitchBetweenManagedAndExternal_Refused(t *testing.T) {
	ns := newNamespace(t)
	ref := corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "conn"}, Key: "url"}
	managed := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: "managed", Namespace: ns}, Spec: salesv1alpha1.FlashSaleSpec{Tickets: 10}}
	external := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: "external", Namespace: ns}, Spec: salesv1alpha1.FlashSaleSpec{Tickets: 10,
		Redis:    salesv1alpha1.RedisSpec{External: &salesv1alpha1.ExternalRedis{URLSecretRef: &ref}},
		Postgres: salesv1alpha1.PostgresSpec{External: &salesv1alpha1.ExternalPostgres{URLSecretRef: ref}}}}
	for _, s := range []*salesv1alpha1.FlashSale{managed, external} {
		if err := k8s.Create(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	waitObserved(t, managed) // its images are pinned by now
	cases := []struct {
		name   string
		sale   *salesv1alpha1.FlashSale
		mutate func(*salesv1alpha1.FlashSale)
		want   string
	}{
		{"managed -> external postgres", managed, func(s *salesv1alpha1.FlashSale) {
			s.Spec.Postgres = salesv1alpha1.PostgresSpec{External: &salesv1alpha1.ExternalPostgres{URLSecretRef: ref}}
		}, "cannot switch between a managed and an external PostgreSQL"},
		{"managed -> external redis", managed, func(s *salesv1alpha1.FlashSale) {
			s.Spec.Redis = salesv1alpha1.RedisSpec{External: &salesv1alpha1.ExternalRedis{URLSecretRef: &ref}}
		}, "cannot switch between a managed and an external Redis"},
		{"external -> managed postgres", external, func(s *salesv1alpha1.FlashSale) { s.Spec.Postgres = salesv1alpha1.PostgresSpec{} },
			"cannot switch between a managed and an external PostgreSQL"},
	}
	for _, c := range cases {
		if err := tryUpdate(t, c.sale, c.mutate); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: want the CEL refusal %q, got %v", c.name, c.want, err)
		}
	}
}

// Issue 21, defect 8: a permanent apply failure (here a volume that cannot
// grow) must not delay the phases the clock drives: the error's backoff
// grows to minutes, while startsAt is due on time.
func TestReconcile_PermanentApplyFailure_StartsAtStillFlipsThePhaseOnTime(t *testing.T) {
	startsAt := time.Now().Add(25 * time.Second).Truncate(time.Second)
	sale, _, _ := saleOnVolume(t, "late", false, func(s *salesv1alpha1.FlashSaleSpec) { s.StartsAt = &metav1.Time{Time: startsAt} })
	ns := sale.Namespace
	markReady(t, ns, "late-redis", &appsv1.Deployment{})
	markReady(t, ns, "late-postgres", &appsv1.StatefulSet{})
	markReady(t, ns, "late-purchase", &appsv1.Deployment{})
	waitPhase(t, sale, salesv1alpha1.PhaseScheduled, 10*time.Second)
	// From now on every reconcile fails, and nothing else changes: only
	// the backoff (or the clock's wake-up) reconciles the sale again.
	patchSpec(t, sale, func(s *salesv1alpha1.FlashSale) { s.Spec.Postgres.Storage.Size = ptr.To(resource.MustParse("2Gi")) })
	testservers.Eventually(t, 10*time.Second, poll, "Ready says ApplyFailed", func() error {
		if c := meta.FindStatusCondition(saleNow(t, sale).Status.Conditions, salesv1alpha1.ConditionReady); c == nil || c.Reason != "ApplyFailed" {
			return fmt.Errorf("Ready %+v", c)
		}
		return nil
	})
	if time.Until(startsAt) < 5*time.Second {
		t.Fatalf("the failures began %v before startsAt: too late to let the backoff grow", time.Until(startsAt))
	}
	waitPhase(t, sale, salesv1alpha1.PhaseOnSale, time.Until(startsAt)+3*time.Second)
}

// Issue 21, defect 2: where the operator may not read StorageClasses (a
// namespace-scoped install without the chart's cluster-reads ClusterRole),
// a storage resize fails at once with a message saying why, instead of
// waiting forever on a cluster-scoped informer whose list is refused.
func TestResizeStorage_StorageClassReadRefused_FailsFastSayingWhy(t *testing.T) {
	ctx := context.Background()
	sale, class, sts := saleOnVolume(t, "scoped", true, nil)
	ns := sale.Namespace
	// An identity with no rights at all: every read it makes is refused.
	user, err := testEnv.AddUser(envtest.User{Name: "scoped-operator-" + ns}, nil)
	if err != nil {
		t.Fatal(err)
	}
	refused, err := client.New(user.Config(), client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	r := &FlashSaleReconciler{Client: k8s, APIReader: refused}
	want := sts.DeepCopy()
	want.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse("2Gi")
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err = r.resizeStorage(rctx, sale, want)
	if err == nil || !strings.Contains(err.Error(), "may not read StorageClass "+class.Name) || rctx.Err() != nil {
		t.Fatalf("want a prompt error saying the StorageClass read is refused, got %v (ctx %v)", err, rctx.Err())
	}
}
