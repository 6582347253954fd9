package controllers

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/controllers/specs"
	"github.com/flux-order/flux-order/internal/pki"
	"github.com/flux-order/flux-order/internal/testservers"
)

// saleSecrets are every Secret the operator generates for a managed sale.
func saleSecrets(name string) []string {
	return []string{name + "-postgres", name + "-postgres-admin", name + "-redis", name + "-sale", name + "-ca", name + "-tls"}
}

func createSale(t *testing.T, ns, name string, mutate ...func(*salesv1alpha1.FlashSale)) *salesv1alpha1.FlashSale {
	t.Helper()
	sale := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: salesv1alpha1.FlashSaleSpec{Tickets: 10}}
	for _, m := range mutate {
		m(sale)
	}
	if err := k8s.Create(context.Background(), sale); err != nil {
		t.Fatal(err)
	}
	return sale
}

// waitObserved waits until the operator has acted on the sale's current generation.
func waitObserved(t *testing.T, sale *salesv1alpha1.FlashSale) {
	t.Helper()
	testservers.Eventually(t, 10*time.Second, poll, "observedGeneration", func() error {
		s := saleNow(t, sale)
		if s.Status.ObservedGeneration != s.Generation {
			return fmt.Errorf("observed %d, generation %d", s.Status.ObservedGeneration, s.Generation)
		}
		return nil
	})
}

func TestSecrets_GeneratedOnce_SurviveReconciles_DerivedKeysFollowTheSpec(t *testing.T) {
	ns := newNamespace(t)
	sale := createSale(t, ns, "creds")
	before := map[string]map[string][]byte{}
	testservers.Eventually(t, 10*time.Second, poll, "generated secrets", func() error {
		for _, name := range saleSecrets("creds") {
			s := &corev1.Secret{}
			if err := get(t, ns, name, s); err != nil {
				return err
			}
			before[name] = s.Data
		}
		return nil
	})
	if p := before["creds-postgres"][specs.SecretKeyPass]; len(p) < 32 || bytes.Equal(p, before["creds-postgres-admin"][specs.SecretKeyPass]) {
		t.Errorf("the app role's and the superuser's passwords must be long and different")
	}
	if tok := before["creds-sale"][specs.SecretKeyAdminToken]; len(tok) < 32 || bytes.Equal(tok, before["creds-sale"][specs.SecretKeySaleSecret]) {
		t.Errorf("the admin token must be long (the pods refuse fewer than 32 bytes) and its own: %q", tok)
	}
	if u := string(before["creds-postgres"][specs.SecretKeyURL]); !strings.Contains(u, "sslmode=verify-full") {
		t.Errorf("database url %s", u)
	}
	cert, err := pki.ParseCertificate(before["creds-tls"]["tls.crt"])
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.VerifyHostname("creds-postgres." + ns + ".svc"); err != nil {
		t.Errorf("the certificate must name the Postgres Service: %v", err)
	}

	// Reconcile again (a spec change) and switch Redis to TLS: passwords
	// stay, the Redis URL follows the spec.
	s := saleNow(t, sale)
	s.Spec.MaxTicketsPerBuyer = 3
	s.Spec.Redis.TLS = true
	if err := k8s.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	waitObserved(t, sale)
	testservers.Eventually(t, 10*time.Second, poll, "rediss:// url", func() error {
		r := &corev1.Secret{}
		if err := get(t, ns, "creds-redis", r); err != nil {
			return err
		}
		if u := string(r.Data[specs.SecretKeyURL]); !strings.HasPrefix(u, "rediss://") {
			return fmt.Errorf("url %s", u)
		}
		return nil
	})
	for _, name := range saleSecrets("creds") {
		got := &corev1.Secret{}
		if err := get(t, ns, name, got); err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{specs.SecretKeyPass, specs.SecretKeySaleSecret, specs.SecretKeyAdminToken, specs.SecretKeyCAKey, "tls.key"} {
			if want, ok := before[name][key]; ok && !bytes.Equal(got.Data[key], want) {
				t.Errorf("Secret %s key %s changed on reconcile", name, key)
			}
		}
	}
}

func TestPurchasePods_NoLiteralCredentials(t *testing.T) {
	ns := newNamespace(t)
	createSale(t, ns, "lit")
	dep := &appsv1.Deployment{}
	testservers.Eventually(t, 10*time.Second, poll, "purchase deployment", func() error { return get(t, ns, "lit-purchase", dep) })
	pw := &corev1.Secret{}
	testservers.Eventually(t, 10*time.Second, poll, "secret", func() error { return get(t, ns, "lit-postgres", pw) })
	spec := dep.Spec.Template.Spec
	for _, e := range spec.Containers[0].Env {
		if strings.Contains(e.Value, "://") || (len(e.Value) > 0 && strings.Contains(string(pw.Data[specs.SecretKeyPass]), e.Value) && len(e.Value) > 8) {
			t.Errorf("env %s holds a literal credential %q", e.Name, e.Value)
		}
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			if n := e.ValueFrom.SecretKeyRef.Name; n == "lit-postgres-admin" || n == "lit-ca" {
				t.Errorf("env %s reads Secret %s", e.Name, n)
			}
		}
	}
	for _, k := range []string{"FLUX_ORDER_REDIS_URL", "FLUX_ORDER_DATABASE_URL", "FLUX_ORDER_SALE_SECRET", "FLUX_ORDER_ADMIN_TOKEN"} {
		found := false
		for _, e := range spec.Containers[0].Env {
			found = found || (e.Name == k && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil)
		}
		if !found {
			t.Errorf("%s must come from a Secret key", k)
		}
	}
}

// TestNetworkPolicies_SelectTheRightPods checks the policies the API server
// stores against the pod labels the sales' own workloads stamp on their
// pods, with two sales in one namespace.
func TestNetworkPolicies_SelectTheRightPods(t *testing.T) {
	ns := newNamespace(t)
	createSale(t, ns, "np-a")
	createSale(t, ns, "np-b")
	podLabels := map[string]labels.Set{}
	for _, name := range []string{"np-a-purchase", "np-a-redis", "np-b-purchase", "np-b-redis"} {
		d := &appsv1.Deployment{}
		testservers.Eventually(t, 10*time.Second, poll, name, func() error { return get(t, ns, name, d) })
		podLabels[name] = d.Spec.Template.Labels
	}
	sts := &appsv1.StatefulSet{}
	testservers.Eventually(t, 10*time.Second, poll, "np-a-postgres", func() error { return get(t, ns, "np-a-postgres", sts) })
	podLabels["np-a-postgres"] = sts.Spec.Template.Labels

	selects := func(sel *metav1.LabelSelector, pod string) bool {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			t.Fatal(err)
		}
		return s.Matches(podLabels[pod])
	}
	for _, c := range []struct{ policy, protects string }{{"np-a-redis", "np-a-redis"}, {"np-a-postgres", "np-a-postgres"}} {
		np := &networkingv1.NetworkPolicy{}
		testservers.Eventually(t, 10*time.Second, poll, c.policy, func() error { return get(t, ns, c.policy, np) })
		for pod := range podLabels {
			if got, want := selects(&np.Spec.PodSelector, pod), pod == c.protects; got != want {
				t.Errorf("policy %s applies to %s: %v, want %v", c.policy, pod, got, want)
			}
		}
		if len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].From) != 1 || np.Spec.Ingress[0].From[0].NamespaceSelector != nil {
			t.Fatalf("policy %s ingress %+v", c.policy, np.Spec.Ingress)
		}
		for pod := range podLabels {
			if got, want := selects(np.Spec.Ingress[0].From[0].PodSelector, pod), pod == "np-a-purchase"; got != want {
				t.Errorf("policy %s admits %s: %v, want %v", c.policy, pod, got, want)
			}
		}
	}
	pp := &networkingv1.NetworkPolicy{}
	testservers.Eventually(t, 10*time.Second, poll, "purchase policy", func() error { return get(t, ns, "np-a-purchase", pp) })
	if !selects(&pp.Spec.PodSelector, "np-a-purchase") || selects(&pp.Spec.PodSelector, "np-b-purchase") {
		t.Errorf("purchase policy selects %+v", pp.Spec.PodSelector)
	}
	for _, rule := range pp.Spec.Ingress {
		for _, port := range rule.Ports {
			if port.Port.IntValue() == specs.MetricsPort && len(rule.From) == 0 {
				t.Errorf("the metrics port is open to everyone: %+v", rule)
			}
		}
	}

	// Turning the policies off removes them.
	s := &salesv1alpha1.FlashSale{}
	if err := get(t, ns, "np-a", s); err != nil {
		t.Fatal(err)
	}
	off := false
	s.Spec.NetworkPolicy.Enabled = &off
	if err := k8s.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	testservers.Eventually(t, 10*time.Second, poll, "policies removed", func() error {
		if err := get(t, ns, "np-a-redis", &networkingv1.NetworkPolicy{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("np-a-redis: %v", err)
		}
		return nil
	})
}

func TestCache_HoldsOnlyTheOperatorsSecrets(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "someone-elses", Namespace: ns}, StringData: map[string]string{"k": "v"}}
	ours := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "ours", Namespace: ns,
		Labels: map[string]string{specs.ManagedByLabel: specs.ManagedBy}}, StringData: map[string]string{"k": "v"}}
	for _, s := range []*corev1.Secret{foreign, ours} {
		if err := k8s.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	// Once the labelled Secret (created second) is in the cache, the
	// unlabelled one would be too, were it watched.
	testservers.Eventually(t, 10*time.Second, poll, "labelled secret cached", func() error {
		return mgrCache.Get(ctx, client.ObjectKeyFromObject(ours), &corev1.Secret{})
	})
	if err := mgrCache.Get(ctx, client.ObjectKeyFromObject(foreign), &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("an unlabelled Secret reached the manager's cache (err %v)", err)
	}
	list := &corev1.SecretList{}
	if err := mgrCache.List(ctx, list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, s := range list.Items {
		if s.Labels[specs.ManagedByLabel] != specs.ManagedBy {
			t.Errorf("cached Secret %s has no managed-by label", s.Name)
		}
	}
}

// Issue 19: a sale whose Secret predates the admin token (made by an older
// operator) gets one, and none of its other keys changes.
func TestSecrets_AnOldSaleSecretGetsAnAdminToken_OtherKeysKept(t *testing.T) {
	ns := newNamespace(t)
	sale := createSale(t, ns, "old")
	sec := &corev1.Secret{}
	testservers.Eventually(t, 10*time.Second, poll, "the sale's Secret", func() error { return get(t, ns, "old-sale", sec) })
	old := sec.DeepCopy()
	delete(old.Data, specs.SecretKeyAdminToken)
	if err := k8s.Update(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	// Any reconcile adds it back, a new one.
	s := saleNow(t, sale)
	s.Spec.MaxTicketsPerBuyer = 2
	if err := k8s.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	testservers.Eventually(t, 10*time.Second, poll, "an admin token added", func() error {
		got := &corev1.Secret{}
		if err := get(t, ns, "old-sale", got); err != nil {
			return err
		}
		tok := got.Data[specs.SecretKeyAdminToken]
		switch {
		case len(tok) < 32:
			return fmt.Errorf("admin token %q", tok)
		case bytes.Equal(tok, sec.Data[specs.SecretKeyAdminToken]):
			return fmt.Errorf("the token is the removed one")
		case !bytes.Equal(got.Data[specs.SecretKeySaleSecret], sec.Data[specs.SecretKeySaleSecret]) || len(got.Data) != len(sec.Data):
			return fmt.Errorf("the other keys changed: %v", got.Data)
		}
		return nil
	})
}

// Review finding: a datastore NetworkPolicy the API server refused (a
// policy engine, a quota, a missing RBAC rule) did not stop the datastores
// being created: they ran open. A datastore's Service and workload now wait
// for its NetworkPolicy to exist; Ready says why; they are created once it
// can be.
func TestNetworkPolicies_Refused_DatastoresWaitUntilTheyAreClosed(t *testing.T) {
	ns := newNamespace(t)
	lift := refuse(t, ns, "networkpolicies", func() client.Object { return &networkingv1.NetworkPolicy{} })
	sale := createSale(t, ns, "closed")
	testservers.Eventually(t, 10*time.Second, poll, "Ready ApplyFailed naming the datastores that wait", func() error {
		c := meta.FindStatusCondition(saleNow(t, sale).Status.Conditions, salesv1alpha1.ConditionReady)
		if c == nil || c.Reason != "ApplyFailed" || !strings.Contains(c.Message, "StatefulSet closed-postgres not applied: its NetworkPolicy closed-postgres does not exist") ||
			!strings.Contains(c.Message, "Deployment closed-redis not applied: its NetworkPolicy closed-redis does not exist") {
			return fmt.Errorf("Ready %+v", c)
		}
		return nil
	})
	reconcileNow(t, sale)
	datastores := map[string]client.Object{
		"closed-postgres StatefulSet": &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "closed-postgres"}},
		"closed-postgres Service":     &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "closed-postgres"}},
		"closed-redis Deployment":     &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "closed-redis"}},
		"closed-redis Service":        &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "closed-redis"}},
	}
	for what, obj := range datastores {
		if err := get(t, ns, obj.GetName(), obj); !apierrors.IsNotFound(err) {
			t.Errorf("%s while its NetworkPolicy does not exist: %v", what, err)
		}
	}
	if err := get(t, ns, "closed-purchase", &appsv1.Deployment{}); err != nil {
		t.Errorf("the rest of the sale is still applied: %v", err)
	}

	lift()
	reconcileNow(t, sale)
	testservers.Eventually(t, 10*time.Second, poll, "the datastores, closed", func() error {
		for _, name := range []string{"closed-postgres", "closed-redis"} {
			if err := get(t, ns, name, &networkingv1.NetworkPolicy{}); err != nil {
				return err
			}
		}
		for what, obj := range datastores {
			if err := get(t, ns, obj.GetName(), obj); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
		}
		return nil
	})
}
