package controllers

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/controllers/specs"
	"github.com/flux-order/flux-order/internal/testservers"
)

func TestReclaimPolicy_RetainKeepsCredentialsWithTheVolume_ReCreatedSaleReusesThem(t *testing.T) {
	ns := newNamespace(t)
	sale := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: "keep", Namespace: ns}, Spec: salesv1alpha1.FlashSaleSpec{Tickets: 10}}
	if err := k8s.Create(context.Background(), sale); err != nil {
		t.Fatal(err)
	}
	secret, sts := &corev1.Secret{}, &appsv1.StatefulSet{}
	testservers.Eventually(t, 10*time.Second, poll, "credentials and database", func() error {
		if err := get(t, ns, "keep-postgres", secret); err != nil {
			return err
		}
		return get(t, ns, "keep-postgres", sts)
	})
	if len(secret.OwnerReferences) != 0 || secret.Labels[specs.RetainedLabel] != "true" || secret.Labels["app.kubernetes.io/instance"] != "keep" {
		t.Fatalf("with Retain the credentials must have no owner (garbage collection would take them) and the labels to find them: %+v", secret.ObjectMeta)
	}
	if p := sts.Spec.PersistentVolumeClaimRetentionPolicy.WhenDeleted; p != appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
		t.Fatalf("with Retain the volume must stay: %s", p)
	}
	// Exactly the Secrets docs/operations.md lists as kept are ownerless;
	// the others go with the sale.
	testservers.Eventually(t, 10*time.Second, poll, "kept and owned Secrets", func() error {
		list := &corev1.SecretList{}
		if err := k8s.List(context.Background(), list, client.InNamespace(ns)); err != nil {
			return err
		}
		var kept, owned []string
		for _, s := range list.Items {
			switch {
			case len(s.OwnerReferences) == 0 && s.Labels[specs.RetainedLabel] == "true":
				kept = append(kept, s.Name)
			case len(s.OwnerReferences) == 1 && s.Labels[specs.RetainedLabel] == "":
				owned = append(owned, s.Name)
			default:
				return fmt.Errorf("%s: owners %v, labels %v", s.Name, s.OwnerReferences, s.Labels)
			}
		}
		slices.Sort(kept)
		slices.Sort(owned)
		wantKept := []string{"keep-ca", "keep-postgres", "keep-postgres-admin", "keep-sale", "keep-tls"}
		if !slices.Equal(kept, wantKept) || !slices.Equal(owned, []string{"keep-redis", "keep-webhooks"}) {
			return fmt.Errorf("kept %v (want %v), owned %v", kept, wantKept, owned)
		}
		return nil
	})
	password := string(secret.Data["password"])

	// Deleted and re-created with the same name: the same credentials.
	// (envtest has no garbage collector: the test removes the owned
	// StatefulSet itself, as it would.)
	if err := k8s.Delete(context.Background(), saleNow(t, sale)); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Delete(context.Background(), sts); err != nil {
		t.Fatal(err)
	}
	testservers.Eventually(t, 10*time.Second, poll, "sale gone", func() error {
		if err := get(t, ns, "keep", &salesv1alpha1.FlashSale{}); err == nil {
			return fmt.Errorf("still there")
		}
		return nil
	})
	again := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: "keep", Namespace: ns}, Spec: salesv1alpha1.FlashSaleSpec{Tickets: 10}}
	if err := k8s.Create(context.Background(), again); err != nil {
		t.Fatal(err)
	}
	testservers.Eventually(t, 10*time.Second, poll, "the re-created sale's database", func() error { return get(t, ns, "keep-postgres", &appsv1.StatefulSet{}) })
	waitObserved(t, again)
	if err := get(t, ns, "keep-postgres", secret); err != nil || string(secret.Data["password"]) != password {
		t.Fatalf("the re-created sale must reuse the retained password (its data directory has it): %v", err)
	}
	testservers.Eventually(t, 10*time.Second, poll, "a Resumed event", func() error { return findEvent(t, ns, "Resumed") })

	// Delete: the sale owns its credentials, and the volume goes with it.
	patchSpec(t, again, func(s *salesv1alpha1.FlashSale) { s.Spec.Postgres.ReclaimPolicy = salesv1alpha1.ReclaimDelete })
	testservers.Eventually(t, 10*time.Second, poll, "credentials owned by the sale", func() error {
		if err := get(t, ns, "keep-postgres", secret); err != nil {
			return err
		}
		if refs := secret.OwnerReferences; len(refs) != 1 || refs[0].UID != saleNow(t, again).UID || !*refs[0].Controller {
			return fmt.Errorf("owners %+v", refs)
		}
		if err := get(t, ns, "keep-postgres", sts); err != nil {
			return err
		}
		if p := sts.Spec.PersistentVolumeClaimRetentionPolicy.WhenDeleted; p != appsv1.DeletePersistentVolumeClaimRetentionPolicyType {
			return fmt.Errorf("volume retention %s", p)
		}
		return nil
	})
}
