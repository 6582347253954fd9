package controllers

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/controllers/specs"
	"github.com/flux-order/flux-order/internal/pki"
)

// Issue 21, defect 3: eleven years of one sale's certificates, a reconcile
// every four days on a simulated clock, against the real API server. One
// sale never stops being live (the urgent margins alone), the other is live
// but for one reconcile in 20. The purchase pods' rollout to a new bundle takes
// one step. At every step: the certificate in <sale>-tls is valid and
// verifies against the bundle the purchase pods run with, the bundle holds
// at most two CAs, and the next wake-up is in the future. Over the eleven years: the CA is replaced
// once, the certificate about once a year, never in a loop.
func TestCertificates_ElevenYears_NeverExpired_NeverDistrusted_NoLoop(t *testing.T) {
	for _, c := range []struct {
		name       string
		breakEvery int // one reconcile in breakEvery is not live; 0: always live
	}{{"always-live", 0}, {"breaks", 20}} {
		t.Run(c.name, func(t *testing.T) { simulateCertificates(t, c.breakEvery) })
	}
}

func simulateCertificates(t *testing.T, breakEvery int) {
	ctx := context.Background()
	ns := newNamespace(t)
	now := time.Now()
	rec := events.NewFakeRecorder(100000)
	r := &FlashSaleReconciler{Client: k8s, Recorder: rec, Now: func() time.Time { return now }}
	// The sale is not in the API (the manager leaves its objects alone):
	// only what ensureTLS reads of it.
	sale := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "sim", UID: types.UID("sim-uid")}}
	sale.Spec.Redis.TLS = true
	sale.Status.Phase = salesv1alpha1.PhaseOnSale
	purchase := specs.PurchaseDeployment(sale, testOpts)
	purchase.OwnerReferences = nil
	if err := k8s.Create(ctx, purchase); err != nil {
		t.Fatal(err)
	}
	var podsTrust []byte // the bundle every purchase pod runs with
	rolling := false
	var lastCert, lastCA []byte
	issued, replaced := 0, 0
	const step = 96 * time.Hour
	for i := 0; now.Before(time.Now().Add(11 * 365 * 24 * time.Hour)); i++ {
		sale.Spec.EndsAt = nil
		if breakEvery > 0 && i%breakEvery == 0 {
			sale.Spec.EndsAt = &metav1.Time{Time: now.Add(-time.Hour)} // ended: not live
		}
		// The rollout started last step is complete.
		if rolling {
			dep := &appsv1.Deployment{}
			if err := get(t, ns, "sim-purchase", dep); err != nil {
				t.Fatal(err)
			}
			dep.Status = appsv1.DeploymentStatus{ObservedGeneration: dep.Generation, Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 2, AvailableReplicas: 2}
			if err := k8s.Status().Update(ctx, dep); err != nil {
				t.Fatal(err)
			}
			podsTrust, rolling = secretData(t, ns, "sim-tls")["ca.crt"], false
		}
		st, err := r.ensureTLS(ctx, sale)
		if err != nil {
			t.Fatalf("day %d: %v", i*4, err)
		}
		tlsData, caData := secretData(t, ns, "sim-tls"), secretData(t, ns, "sim-ca")
		if podsTrust == nil {
			podsTrust = tlsData["ca.crt"]
		}
		if string(tlsData["tls.crt"]) != string(lastCert) {
			issued, lastCert = issued+1, tlsData["tls.crt"]
		}
		if string(caData["ca.crt"]) != string(lastCA) {
			replaced, lastCA = replaced+1, caData["ca.crt"]
		}
		if b, _ := pki.ParseCertificates(tlsData["ca.crt"]); len(b) > 2 {
			t.Fatalf("day %d: the trust bundle holds %d CAs", i*4, len(b))
		}
		if err := verifiesAt(tlsData["tls.crt"], podsTrust, ns, "sim", now); err != nil {
			t.Fatalf("day %d: the purchase pods would refuse the datastores: %v", i*4, err)
		}
		// The operator's template for the purchase pods: a new bundle rolls them.
		dep := &appsv1.Deployment{}
		if err := get(t, ns, "sim-purchase", dep); err != nil {
			t.Fatal(err)
		}
		if dep.Spec.Template.Annotations[TrustAnnotation] != st.trust {
			dep.Spec.Template.Annotations[TrustAnnotation] = st.trust
			if err := k8s.Update(ctx, dep); err != nil {
				t.Fatal(err)
			}
			rolling = true
		}
		// The next look: scheduled in the future, or (waiting for a
		// rollout) left to the Deployment's watch. Never at once: a loop.
		if !st.wake.IsZero() && !st.wake.After(now) || st.wake.IsZero() && !rolling {
			t.Fatalf("day %d: the next look is at %s", i*4, st.wake)
		}
		now = now.Add(step)
	}
	t.Logf("certificates issued: %d, CAs made: %d", issued, replaced)
	if replaced != 2 {
		t.Errorf("CAs made in 11 years: %d, want 2 (the first, one replacement)", replaced)
	}
	// A year each (less the renewal margin), plus the move to the new CA.
	if issued < 11 || issued > 15 {
		t.Errorf("certificates issued in 11 years: %d, want 11 to 15", issued)
	}
}
