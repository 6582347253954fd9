package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/controllers/specs"
	"github.com/flux-order/flux-order/internal/testservers"
)

// waitImages waits until the sale's purchase, Redis and Postgres workloads
// run the given images.
func waitImages(t *testing.T, ns, sale, purchase, redis, postgres string) {
	t.Helper()
	testservers.Eventually(t, 10*time.Second, poll, sale+" runs "+purchase+", "+redis+", "+postgres, func() error {
		p, r, pg := &appsv1.Deployment{}, &appsv1.Deployment{}, &appsv1.StatefulSet{}
		if err := get(t, ns, sale+"-purchase", p); err != nil {
			return err
		}
		if err := get(t, ns, sale+"-redis", r); err != nil {
			return err
		}
		if err := get(t, ns, sale+"-postgres", pg); err != nil {
			return err
		}
		got := [3]string{p.Spec.Template.Spec.Containers[0].Image, r.Spec.Template.Spec.Containers[0].Image, pg.Spec.Template.Spec.Containers[0].Image}
		if got != [3]string{purchase, redis, postgres} {
			return fmt.Errorf("images %v", got)
		}
		return nil
	})
}

func TestUpgrade_OperatorWithNewDefaults_ChangesNoLiveSale_NewSaleGetsThem(t *testing.T) {
	ns := newNamespace(t)
	live := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: "live", Namespace: ns}, Spec: salesv1alpha1.FlashSaleSpec{Tickets: 10}}
	if err := k8s.Create(context.Background(), live); err != nil {
		t.Fatal(err)
	}
	waitImages(t, ns, "live", testOpts.PurchaseImage, testOpts.RedisImage, testOpts.PostgresImage)
	if s := saleNow(t, live).Spec; s.PurchaseAPI.Image != testOpts.PurchaseImage || s.Redis.Image != testOpts.RedisImage || s.Postgres.Image != testOpts.PostgresImage {
		t.Fatalf("the images must be recorded in the sale at creation: %+v %+v %+v", s.PurchaseAPI, s.Redis, s.Postgres)
	}

	upgraded := specs.Options{PurchaseImage: "example.com/flux-order:v2", RedisImage: "redis:8", PostgresImage: "postgres:16"}
	restartManager(t, upgraded)
	// The new manager reconciles the live sale (at start, and after this edit).
	patchSpec(t, live, func(s *salesv1alpha1.FlashSale) { s.Spec.MaxTicketsPerBuyer = 2 })
	waitObserved(t, live)
	waitImages(t, ns, "live", testOpts.PurchaseImage, testOpts.RedisImage, testOpts.PostgresImage)

	fresh := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: "fresh", Namespace: ns}, Spec: salesv1alpha1.FlashSaleSpec{Tickets: 10}}
	if err := k8s.Create(context.Background(), fresh); err != nil {
		t.Fatal(err)
	}
	waitImages(t, ns, "fresh", upgraded.PurchaseImage, upgraded.RedisImage, upgraded.PostgresImage)

	// Upgrading one sale is an explicit edit of its spec.
	patchSpec(t, live, func(s *salesv1alpha1.FlashSale) { s.Spec.PurchaseAPI.Image = upgraded.PurchaseImage })
	waitImages(t, ns, "live", upgraded.PurchaseImage, testOpts.RedisImage, testOpts.PostgresImage)
}

func TestValidation_PostgresMajorVersionChange_RefusedWithHowToMigrate(t *testing.T) {
	ns := newNamespace(t)
	sale := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: "pg", Namespace: ns},
		Spec: salesv1alpha1.FlashSaleSpec{Tickets: 10, Postgres: salesv1alpha1.PostgresSpec{Image: "postgres:15"}}}
	if err := k8s.Create(context.Background(), sale); err != nil {
		t.Fatal(err)
	}
	update := func(image string) error {
		return tryUpdate(t, sale, func(s *salesv1alpha1.FlashSale) { s.Spec.Postgres.Image = image })
	}
	for _, image := range []string{"postgres:16", "registry.example.com:5000/postgres:17-alpine", "postgres:latest", ""} {
		if err := update(image); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "pg_dump") {
			t.Errorf("postgres:15 -> %q: want the CEL refusal saying how to migrate, got %v", image, err)
		}
	}
	for _, image := range []string{"postgres:15.10", "registry.example.com:5000/postgres:15-alpine"} {
		if err := update(image); err != nil {
			t.Errorf("postgres:15 -> %q is a minor upgrade and must be allowed: %v", image, err)
		}
	}
}

// Issue 21, defect 4: the guards on the PostgreSQL image and storage class
// cannot be bypassed. An update that drops spec.postgres entirely (kubectl
// replace with a manifest without the block) would clear the pinned image,
// and a digest hid the major version of the tag before it.
func TestValidation_PostgresGuards_HoldWithoutTheBlockAndWithDigests(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	digest := "@sha256:" + strings.Repeat("ab", 32)
	sale := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: "pgd", Namespace: ns},
		Spec: salesv1alpha1.FlashSaleSpec{Tickets: 10, Postgres: salesv1alpha1.PostgresSpec{Image: "postgres:15" + digest,
			Storage: &salesv1alpha1.StorageSpec{StorageClassName: ptr.To("fast")}}}}
	if err := k8s.Create(ctx, sale); err != nil {
		t.Fatal(err)
	}
	// kubectl replace without spec.postgres.
	var replaceErr error
	testservers.Eventually(t, 10*time.Second, poll, "a replace not lost to a conflict with the operator's writes", func() error {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(salesv1alpha1.GroupVersion.WithKind(salesv1alpha1.FlashSaleKind))
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(sale), u); err != nil {
			return err
		}
		unstructured.RemoveNestedField(u.Object, "spec", "postgres")
		if replaceErr = k8s.Update(ctx, u); apierrors.IsConflict(replaceErr) {
			return replaceErr
		}
		return nil
	})
	if !apierrors.IsInvalid(replaceErr) || !strings.Contains(replaceErr.Error(), "pg_dump") || !strings.Contains(replaceErr.Error(), "storageClassName cannot change") {
		t.Errorf("dropping spec.postgres: want both CEL refusals, got %v", replaceErr)
	}
	update := func(image string) error {
		return tryUpdate(t, sale, func(s *salesv1alpha1.FlashSale) { s.Spec.Postgres.Image = image })
	}
	for _, image := range []string{"postgres:16", "postgres:16" + digest, "postgres" + digest} {
		if err := update(image); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "major version") {
			t.Errorf("postgres:15@sha256 -> %q: want the major-version refusal, got %v", image, err)
		}
	}
	for _, image := range []string{"postgres:15.10", "registry.example.com:5000/postgres:15-alpine" + digest} {
		if err := update(image); err != nil {
			t.Errorf("postgres:15@sha256 -> %q keeps the major version and must be allowed: %v", image, err)
		}
	}
}
