package controllers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/controllers/specs"
	"github.com/flux-order/flux-order/internal/kubetest"
	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase/statusreport"
)

func loadSample(t *testing.T, ns string) *salesv1alpha1.FlashSale {
	t.Helper()
	f, err := os.Open("../config/samples/sales_v1alpha1_flashsale.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sale := &salesv1alpha1.FlashSale{}
	if err := yaml.NewYAMLOrJSONDecoder(f, 4096).Decode(sale); err != nil {
		t.Fatal(err)
	}
	sale.Namespace = ns
	return sale
}

func get(t *testing.T, ns, name string, obj client.Object) error {
	t.Helper()
	return k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, obj)
}

func saleNow(t *testing.T, sale *salesv1alpha1.FlashSale) *salesv1alpha1.FlashSale {
	t.Helper()
	s := &salesv1alpha1.FlashSale{}
	if err := get(t, sale.Namespace, sale.Name, s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestReconcile_Sample_CreatesEveryOwnedObject(t *testing.T) {
	ns := newNamespace(t)
	sale := loadSample(t, ns)
	if err := k8s.Create(context.Background(), sale); err != nil {
		t.Fatal(err)
	}
	name := sale.Name
	owned := map[string]client.Object{
		name + "-postgres":          &corev1.Secret{},
		name + "-postgres/svc":      &corev1.Service{},
		name + "-postgres/sts":      &appsv1.StatefulSet{},
		name + "-redis":             &appsv1.Deployment{},
		name + "-redis/svc":         &corev1.Service{},
		name + "-purchase/sa":       &corev1.ServiceAccount{},
		name + "-purchase/role":     &rbacv1.Role{},
		name + "-purchase/rb":       &rbacv1.RoleBinding{},
		name + "-purchase-reporter": &coordinationv1.Lease{},
		name + "-purchase":          &appsv1.Deployment{},
		name + "-purchase/svc":      &corev1.Service{},
		name + "-purchase/pdb":      &policyv1.PodDisruptionBudget{},
		name + "/ingress":           &networkingv1.Ingress{},
		name + "-purchase/no-hpa":   &autoscalingv2.HorizontalPodAutoscaler{},
	}
	for key, obj := range owned {
		objName, _, _ := strings.Cut(key, "/")
		if strings.HasSuffix(key, "/no-hpa") {
			continue
		}
		testservers.Eventually(t, 10*time.Second, poll, key+" exists", func() error { return get(t, ns, objName, obj) })
		refs := obj.GetOwnerReferences()
		if _, retained := obj.(*corev1.Secret); retained {
			// reclaimPolicy Retain (the default): the credentials live as long
			// as the database volume, not as the sale.
			if len(refs) != 0 {
				t.Errorf("%s: want no owner (retained with the data), got %+v", key, refs)
			}
		} else if len(refs) != 1 || refs[0].Name != name || refs[0].Kind != "FlashSale" || !ptr.Deref(refs[0].Controller, false) {
			t.Errorf("%s: want the sale as controller owner, got %+v", key, refs)
		}
		if l := obj.GetLabels(); l["app.kubernetes.io/instance"] != name || l["app.kubernetes.io/managed-by"] != "flux-order" ||
			l["app.kubernetes.io/name"] != "flux-order" || l["app.kubernetes.io/component"] == "" {
			t.Errorf("%s: labels %v", key, l)
		}
	}
	if err := get(t, ns, name+"-purchase", &autoscalingv2.HorizontalPodAutoscaler{}); !apierrors.IsNotFound(err) {
		t.Errorf("no autoscaling: want no HPA, got %v", err)
	}

	dep := owned[name+"-purchase"].(*appsv1.Deployment)
	c := dep.Spec.Template.Spec.Containers[0]
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	switch {
	case c.Image != testOpts.PurchaseImage:
		t.Errorf("purchase image %q, want the operator default %q", c.Image, testOpts.PurchaseImage)
	case c.ImagePullPolicy == corev1.PullAlways:
		t.Errorf("purchase pods must not force image pulls")
	case *dep.Spec.Replicas != 2:
		t.Errorf("replicas %d, want 2", *dep.Spec.Replicas)
	case env["FLUX_ORDER_SALE"].Value != name || env["FLUX_ORDER_REDIS_URL"].ValueFrom.SecretKeyRef.Name != name+"-redis" ||
		env["FLUX_ORDER_REPORT_STATUS"].Value != "true":
		t.Errorf("purchase env %v", c.Env)
	case env["FLUX_ORDER_DATABASE_URL"].ValueFrom.SecretKeyRef.Name != name+"-postgres" || env["FLUX_ORDER_DATABASE_URL"].ValueFrom.SecretKeyRef.Key != "url":
		t.Errorf("database url must come from the generated Secret: %+v", env["FLUX_ORDER_DATABASE_URL"])
	case c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe.HTTPGet.Path != "/healthz":
		t.Errorf("probes %+v %+v", c.ReadinessProbe, c.LivenessProbe)
	case !*c.SecurityContext.ReadOnlyRootFilesystem || !*dep.Spec.Template.Spec.SecurityContext.RunAsNonRoot || *c.SecurityContext.AllowPrivilegeEscalation:
		t.Errorf("purchase pods must be non-root with a read-only root filesystem: %+v", c.SecurityContext)
	case dep.Spec.Template.Annotations[specs.ConfigHashAnnotation] == "":
		t.Errorf("config hash annotation missing")
	case dep.Spec.Template.Spec.ServiceAccountName != name+"-purchase":
		t.Errorf("service account %q", dep.Spec.Template.Spec.ServiceAccountName)
	}
	sts := owned[name+"-postgres/sts"].(*appsv1.StatefulSet)
	if sts.Spec.Template.Spec.Containers[0].Image != "postgres:15" ||
		sts.Spec.PersistentVolumeClaimRetentionPolicy.WhenDeleted != appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
		t.Errorf("postgres statefulset: image %s, retention %+v", sts.Spec.Template.Spec.Containers[0].Image, sts.Spec.PersistentVolumeClaimRetentionPolicy)
	}
	secret := owned[name+"-postgres"].(*corev1.Secret)
	if len(secret.Data["password"]) < 24 || !strings.Contains(string(secret.Data["url"]), string(secret.Data["password"])) {
		t.Errorf("generated secret: %v", secret.Data)
	}

	testservers.Eventually(t, 10*time.Second, poll, "status says what is not ready", func() error {
		st := saleNow(t, sale).Status
		c := meta.FindStatusCondition(st.Conditions, salesv1alpha1.ConditionRedisReady)
		if st.Phase != salesv1alpha1.PhaseProvisioning || c == nil || c.Status != metav1.ConditionFalse || c.Reason != "NotReady" {
			return fmt.Errorf("phase %q, RedisReady %+v", st.Phase, c)
		}
		if st.URL != "http://demo-concert.localtest" || st.Tickets != 500 || st.ObservedGeneration != saleNow(t, sale).Generation ||
			st.Selector != "app.kubernetes.io/component=purchase,app.kubernetes.io/instance=demo-concert,app.kubernetes.io/name=flux-order" {
			return fmt.Errorf("status %+v", st)
		}
		if len(st.Conditions) != 9 {
			return fmt.Errorf("want 9 conditions (WebhooksReady included), got %+v", st.Conditions)
		}
		return nil
	})

	// The password is generated once: a reconcile never rewrites it.
	before := string(secret.Data["password"])
	patchSpec(t, sale, func(s *salesv1alpha1.FlashSale) { s.Spec.Tickets = 600 })
	waitObserved(t, sale)
	if err := get(t, ns, name+"-postgres", secret); err != nil || string(secret.Data["password"]) != before {
		t.Fatalf("the database password changed: %v", err)
	}
}

// tryUpdate applies mutate to the sale's latest version and returns the
// API server's answer, retrying only on a conflict with the operator's own
// writes (pinning images, status).
func tryUpdate(t *testing.T, sale *salesv1alpha1.FlashSale, mutate func(*salesv1alpha1.FlashSale)) error {
	t.Helper()
	var err error
	testservers.Eventually(t, 5*time.Second, poll, "an update without a conflict", func() error {
		s := saleNow(t, sale)
		mutate(s)
		if err = k8s.Update(context.Background(), s); apierrors.IsConflict(err) {
			return err
		}
		return nil
	})
	return err
}

func TestReconcile_RoutineChanges_NeverTouchThePodTemplate(t *testing.T) {
	ns := newNamespace(t)
	sale := loadSample(t, ns)
	if err := k8s.Create(context.Background(), sale); err != nil {
		t.Fatal(err)
	}
	dep := &appsv1.Deployment{}
	testservers.Eventually(t, 10*time.Second, poll, "purchase Deployment exists", func() error { return get(t, ns, sale.Name+"-purchase", dep) })
	waitObserved(t, sale)
	generation, template := dep.Generation, dep.Spec.Template

	for _, c := range []struct {
		name   string
		change func(*salesv1alpha1.FlashSale)
	}{
		{"pause", func(s *salesv1alpha1.FlashSale) { s.Spec.Paused = true }},
		{"move endsAt", func(s *salesv1alpha1.FlashSale) {
			s.Spec.EndsAt = &metav1.Time{Time: time.Now().Add(48 * time.Hour).Truncate(time.Second)}
		}},
		{"change maxTicketsPerBuyer", func(s *salesv1alpha1.FlashSale) { s.Spec.MaxTicketsPerBuyer = 9 }},
		{"change lockTTL", func(s *salesv1alpha1.FlashSale) { s.Spec.LockTTL = &metav1.Duration{Duration: 2 * time.Second} }},
		{"add tickets", func(s *salesv1alpha1.FlashSale) { s.Spec.Tickets += 100 }},
	} {
		patchSpec(t, sale, c.change)
		waitObserved(t, sale)
		if err := get(t, ns, sale.Name+"-purchase", dep); err != nil {
			t.Fatal(err)
		}
		if dep.Generation != generation || !equality.Semantic.DeepEqual(dep.Spec.Template, template) {
			t.Fatalf("%s: the purchase Deployment changed (generation %d -> %d): its pods would be replaced mid-sale",
				c.name, generation, dep.Generation)
		}
	}

	// A change that needs new pods rolls them, and says so.
	patchSpec(t, sale, func(s *salesv1alpha1.FlashSale) { s.Spec.PurchaseAPI.Image = "example.com/flux-order:v2" })
	testservers.Eventually(t, 10*time.Second, poll, "a new image rolls the pods with an event", func() error {
		if err := get(t, ns, sale.Name+"-purchase", dep); err != nil {
			return err
		}
		if dep.Spec.Template.Spec.Containers[0].Image != "example.com/flux-order:v2" {
			return fmt.Errorf("image %s", dep.Spec.Template.Spec.Containers[0].Image)
		}
		if u := dep.Spec.Strategy.RollingUpdate; u == nil || u.MaxUnavailable.IntValue() != 0 || u.MaxSurge.IntValue() != 1 {
			return fmt.Errorf("rolling update %+v: want one new pod at a time, none taken away first", u)
		}
		return findEvent(t, ns, "RollingUpdate")
	})
}

// findEvent is nil when an event with reason was recorded in ns.
func findEvent(t *testing.T, ns, reason string) error {
	t.Helper()
	list := &eventsv1.EventList{}
	if err := k8s.List(context.Background(), list, client.InNamespace(ns)); err != nil {
		return err
	}
	var seen []string
	for _, e := range list.Items {
		if e.Reason == reason {
			return nil
		}
		seen = append(seen, e.Reason)
	}
	return fmt.Errorf("no %s event among %v", reason, seen)
}

func patchSpec(t *testing.T, sale *salesv1alpha1.FlashSale, mutate func(*salesv1alpha1.FlashSale)) {
	t.Helper()
	testservers.Eventually(t, 5*time.Second, poll, "update spec", func() error {
		s := saleNow(t, sale)
		mutate(s)
		return k8s.Update(context.Background(), s)
	})
}

// markReady plays kubelet and the controller-manager: the workload reports
// ready pods.
func markReady(t *testing.T, ns, name string, obj client.Object) {
	t.Helper()
	kubetest.MarkReady(t, k8s, ns, name, obj)
}

func waitPhase(t *testing.T, sale *salesv1alpha1.FlashSale, want salesv1alpha1.Phase, timeout time.Duration) {
	t.Helper()
	testservers.Eventually(t, timeout, poll, "phase "+string(want), func() error {
		if got := saleNow(t, sale).Status.Phase; got != want {
			return fmt.Errorf("phase is %q", got)
		}
		return nil
	})
}

func TestReconcile_ReadinessAndClock_DrivePhase(t *testing.T) {
	ns := newNamespace(t)
	now := time.Now().Truncate(time.Second)
	// The window leaves provisioning 8 s before startsAt: on a loaded
	// machine 3 s was sometimes spent before the sale was ready, and it
	// went on sale (or ended) without ever being Scheduled.
	sale := &salesv1alpha1.FlashSale{
		ObjectMeta: metav1.ObjectMeta{Name: "phases", Namespace: ns},
		Spec: salesv1alpha1.FlashSaleSpec{
			Tickets:  100,
			StartsAt: &metav1.Time{Time: now.Add(8 * time.Second)},
			EndsAt:   &metav1.Time{Time: now.Add(11 * time.Second)},
		},
	}
	if err := k8s.Create(context.Background(), sale); err != nil {
		t.Fatal(err)
	}
	waitPhase(t, sale, salesv1alpha1.PhaseProvisioning, 10*time.Second)
	markReady(t, ns, "phases-redis", &appsv1.Deployment{})
	markReady(t, ns, "phases-postgres", &appsv1.StatefulSet{})
	waitPhase(t, sale, salesv1alpha1.PhaseProvisioning, 5*time.Second) // purchase pods not ready yet
	markReady(t, ns, "phases-purchase", &appsv1.Deployment{})
	waitPhase(t, sale, salesv1alpha1.PhaseScheduled, 5*time.Second)
	if c := meta.FindStatusCondition(saleNow(t, sale).Status.Conditions, salesv1alpha1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
		t.Fatalf("Ready condition %+v", c)
	}
	// The requeue at startsAt and endsAt flips the phase with no other event.
	waitPhase(t, sale, salesv1alpha1.PhaseOnSale, 10*time.Second)
	waitPhase(t, sale, salesv1alpha1.PhaseEnded, 6*time.Second)

	// A dependency that was ready stops being ready: Degraded. (Ended, the
	// sale hibernates with Redis at 0 on purpose; its purchase pod counts.)
	purchase := &appsv1.Deployment{}
	if err := get(t, ns, "phases-purchase", purchase); err != nil {
		t.Fatal(err)
	}
	purchase.Status.ReadyReplicas, purchase.Status.AvailableReplicas = 0, 0
	if err := k8s.Status().Update(context.Background(), purchase); err != nil {
		t.Fatal(err)
	}
	waitPhase(t, sale, salesv1alpha1.PhaseDegraded, 5*time.Second)
}

func TestValidation_BadFlashSales_RefusedWithActionableMessages(t *testing.T) {
	ns := newNamespace(t)
	good := func(name string) *salesv1alpha1.FlashSale {
		return &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: salesv1alpha1.FlashSaleSpec{Tickets: 10}}
	}
	now := time.Now()
	cases := []struct {
		name   string
		sale   *salesv1alpha1.FlashSale
		mutate func(*salesv1alpha1.FlashSale)
		want   string
	}{
		{"endsAt before startsAt", good("window"), func(s *salesv1alpha1.FlashSale) {
			s.Spec.StartsAt, s.Spec.EndsAt = &metav1.Time{Time: now.Add(time.Hour)}, &metav1.Time{Time: now}
		}, "endsAt must be after startsAt"},
		{"lockTTL too short", good("ttl-short"), func(s *salesv1alpha1.FlashSale) {
			s.Spec.LockTTL = &metav1.Duration{Duration: 10 * time.Millisecond}
		}, "lockTTL must be between 100ms and 60s"},
		{"lockTTL too long", good("ttl-long"), func(s *salesv1alpha1.FlashSale) {
			s.Spec.LockTTL = &metav1.Duration{Duration: 2 * time.Minute}
		}, "lockTTL must be between 100ms and 60s"},
		{"displayName too long", good("long-name"), func(s *salesv1alpha1.FlashSale) { s.Spec.DisplayName = strings.Repeat("x", 201) }, "spec.displayName"},
		{"no tickets", good("zero"), func(s *salesv1alpha1.FlashSale) { s.Spec.Tickets = 0 }, "spec.tickets"},
		{"too many tickets", good("huge"), func(s *salesv1alpha1.FlashSale) { s.Spec.Tickets = 10_000_001 }, "spec.tickets"},
		{"negative replicas", good("neg"), func(s *salesv1alpha1.FlashSale) { s.Spec.PurchaseAPI.Replicas = ptr.To[int32](-1) }, "spec.purchaseAPI.replicas"},
		{"autoscaling min above max", good("hpa"), func(s *salesv1alpha1.FlashSale) {
			s.Spec.PurchaseAPI.Autoscaling = &salesv1alpha1.AutoscalingSpec{MinReplicas: 5, MaxReplicas: 2}
		}, "minReplicas must not exceed maxReplicas"},
		{"name too long", good(strings.Repeat("a", 41)), nil, "at most 40 characters"},
		{"external and managed redis", good("both"), func(s *salesv1alpha1.FlashSale) {
			s.Spec.Redis.Image = "redis:7"
			s.Spec.Redis.External = &salesv1alpha1.ExternalRedis{AddressSecretRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "r"}, Key: "addr"}}
		}, "redis: set either external or image/resources/tls, not both"},
		{"external redis with both a URL and an address", good("two"), func(s *salesv1alpha1.FlashSale) {
			ref := &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "r"}, Key: "k"}
			s.Spec.Redis.External = &salesv1alpha1.ExternalRedis{AddressSecretRef: ref, URLSecretRef: ref}
		}, "set exactly one of urlSecretRef (preferred) and addressSecretRef"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.mutate != nil {
				c.mutate(c.sale)
			}
			err := k8s.Create(context.Background(), c.sale)
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want Invalid mentioning %q, got %v", c.want, err)
			}
		})
	}

	sale := good("shrink")
	if err := k8s.Create(context.Background(), sale); err != nil {
		t.Fatal(err)
	}
	err := tryUpdate(t, sale, func(s *salesv1alpha1.FlashSale) { s.Spec.Tickets = 5 })
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "tickets may grow but never shrink") {
		t.Fatalf("lowering tickets: want the CEL refusal, got %v", err)
	}
}

func TestScale_SubresourceAndAutoscaling(t *testing.T) {
	ns := newNamespace(t)
	sale := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: "scaled", Namespace: ns}, Spec: salesv1alpha1.FlashSaleSpec{Tickets: 10}}
	if err := k8s.Create(context.Background(), sale); err != nil {
		t.Fatal(err)
	}
	dep := &appsv1.Deployment{}
	testservers.Eventually(t, 10*time.Second, poll, "purchase deployment", func() error { return get(t, ns, "scaled-purchase", dep) })

	// kubectl scale flashsale/scaled --replicas=4
	scale := &autoscalingv1.Scale{Spec: autoscalingv1.ScaleSpec{Replicas: 4}}
	if err := k8s.SubResource("scale").Update(context.Background(), saleNow(t, sale), client.WithSubResourceBody(scale)); err != nil {
		t.Fatal(err)
	}
	replicas := func(want int32) func() error {
		return func() error {
			if err := get(t, ns, "scaled-purchase", dep); err != nil {
				return err
			}
			if r := ptr.Deref(dep.Spec.Replicas, 0); r != want {
				return fmt.Errorf("replicas %d, want %d", r, want)
			}
			return nil
		}
	}
	testservers.Eventually(t, 10*time.Second, poll, "deployment scaled to 4", replicas(4))
	markReady(t, ns, "scaled-purchase", dep)
	got := &autoscalingv1.Scale{}
	testservers.Eventually(t, 10*time.Second, poll, "scale status", func() error {
		if err := k8s.SubResource("scale").Get(context.Background(), saleNow(t, sale), got); err != nil {
			return err
		}
		if got.Status.Replicas != 4 || !strings.Contains(got.Status.Selector, "app.kubernetes.io/instance=scaled") {
			return fmt.Errorf("scale %+v", got.Status)
		}
		return nil
	})

	// With autoscaling the HPA decides the replicas; the operator hands
	// them over at the current count (no drop to 1 before the HPA acts).
	patchSpec(t, sale, func(s *salesv1alpha1.FlashSale) {
		s.Spec.PurchaseAPI.Autoscaling = &salesv1alpha1.AutoscalingSpec{MinReplicas: 2, MaxReplicas: 8, TargetCPUUtilizationPercentage: 60}
	})
	hpa := &autoscalingv2.HorizontalPodAutoscaler{}
	testservers.Eventually(t, 10*time.Second, poll, "HPA", func() error { return get(t, ns, "scaled-purchase", hpa) })
	if hpa.Spec.MaxReplicas != 8 || *hpa.Spec.MinReplicas != 2 || hpa.Spec.ScaleTargetRef.Name != "scaled-purchase" {
		t.Fatalf("hpa %+v", hpa.Spec)
	}
	waitObserved(t, sale)
	testservers.Eventually(t, 10*time.Second, poll, "replicas left to the HPA", func() error {
		if err := get(t, ns, "scaled-purchase", dep); err != nil {
			return err
		}
		if ownsReplicas(dep, FieldOwner) {
			return errors.New("the manager still owns spec.replicas")
		}
		return nil
	})
	if r := ptr.Deref(dep.Spec.Replicas, 0); r != 4 {
		t.Fatalf("enabling autoscaling changed the replicas from 4 to %d", r)
	}
	dep.Spec.Replicas = ptr.To[int32](7) // what the HPA would do
	if err := k8s.Update(context.Background(), dep, client.FieldOwner("horizontal-pod-autoscaler")); err != nil {
		t.Fatal(err)
	}
	patchSpec(t, sale, func(s *salesv1alpha1.FlashSale) { s.Spec.Paused = true }) // forces a reconcile
	waitObserved(t, sale)
	if err := replicas(7)(); err != nil {
		t.Fatalf("the operator must leave replicas to the HPA: %v", err)
	}

	// Autoscaling removed: the HPA goes away, the count it left stays and
	// becomes the sale's.
	patchSpec(t, sale, func(s *salesv1alpha1.FlashSale) { s.Spec.PurchaseAPI.Autoscaling = nil })
	testservers.Eventually(t, 10*time.Second, poll, "HPA deleted", func() error {
		if err := get(t, ns, "scaled-purchase", hpa); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there: %v", err)
		}
		return nil
	})
	waitObserved(t, sale)
	if err := replicas(7)(); err != nil || !ownsReplicas(dep, FieldOwner) {
		t.Fatalf("taking the replicas back must keep the HPA's count and own it: %v", err)
	}
	if r := saleNow(t, sale).Spec.PurchaseAPI.Replicas; r == nil || *r != 7 {
		t.Fatalf("spec.purchaseAPI.replicas %v, want the 7 the HPA left", r)
	}
}

func TestReconcile_HandEditsAndDeletions_AreUndone(t *testing.T) {
	ns := newNamespace(t)
	sale := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: "drift", Namespace: ns}, Spec: salesv1alpha1.FlashSaleSpec{Tickets: 10}}
	if err := k8s.Create(context.Background(), sale); err != nil {
		t.Fatal(err)
	}
	dep := &appsv1.Deployment{}
	testservers.Eventually(t, 10*time.Second, poll, "purchase deployment", func() error { return get(t, ns, "drift-purchase", dep) })
	dep.Spec.Template.Spec.Containers[0].Image = "evil:latest"
	if err := k8s.Update(context.Background(), dep); err != nil {
		t.Fatal(err)
	}
	testservers.Eventually(t, 10*time.Second, poll, "image put back", func() error {
		if err := get(t, ns, "drift-purchase", dep); err != nil {
			return err
		}
		if img := dep.Spec.Template.Spec.Containers[0].Image; img != testOpts.PurchaseImage {
			return fmt.Errorf("image %s", img)
		}
		return nil
	})
	svc := &corev1.Service{}
	if err := get(t, ns, "drift-redis", svc); err != nil {
		t.Fatal(err)
	}
	uid := svc.UID
	if err := k8s.Delete(context.Background(), svc); err != nil {
		t.Fatal(err)
	}
	testservers.Eventually(t, 10*time.Second, poll, "service recreated", func() error {
		if err := get(t, ns, "drift-redis", svc); err != nil {
			return err
		}
		if svc.UID == uid {
			return errors.New("still the old object")
		}
		return nil
	})
}

func TestStatusReport_PodsCountsSurviveReconciles(t *testing.T) {
	ns := newNamespace(t)
	sale := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: "report", Namespace: ns}, Spec: salesv1alpha1.FlashSaleSpec{Tickets: 100}}
	if err := k8s.Create(context.Background(), sale); err != nil {
		t.Fatal(err)
	}
	for name, obj := range map[string]client.Object{"report-redis": &appsv1.Deployment{}, "report-postgres": &appsv1.StatefulSet{}, "report-purchase": &appsv1.Deployment{}} {
		markReady(t, ns, name, obj)
	}
	waitPhase(t, sale, salesv1alpha1.PhaseOnSale, 10*time.Second)

	sold := int64(40)
	r, err := statusreport.New(cfg, ns, "report", "pod-a", func(context.Context) (statusreport.Counts, error) {
		return statusreport.Counts{Tickets: 100, Sold: sold}, nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.ReportOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := saleNow(t, sale).Status
	if ptr.Deref(st.Sold, -1) != 40 || ptr.Deref(st.Available, -1) != 60 || st.LastReportTime == nil {
		t.Fatalf("report not applied: %+v", st)
	}
	// A reconcile (spec change) must keep the pods' fields.
	patchSpec(t, sale, func(s *salesv1alpha1.FlashSale) { s.Spec.MaxTicketsPerBuyer = 3 })
	testservers.Eventually(t, 10*time.Second, poll, "reconciled", func() error {
		if g := saleNow(t, sale).Status.ObservedGeneration; g != saleNow(t, sale).Generation {
			return fmt.Errorf("observed generation %d", g)
		}
		return nil
	})
	st = saleNow(t, sale).Status
	if ptr.Deref(st.Sold, -1) != 40 || ptr.Deref(st.Available, -1) != 60 {
		t.Fatalf("a reconcile overwrote the pods' counts: %+v", st)
	}
	// Selling out flips the phase.
	sold = 100
	if err := r.ReportOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitPhase(t, sale, salesv1alpha1.PhaseSoldOut, 10*time.Second)
}

// refuse makes the API server refuse every create and update of resource
// (of group networking.k8s.io) in ns, as a policy engine, a quota or a
// missing RBAC rule would, and returns once that is in force; probe makes
// an object of that resource to try. lift removes the refusal and returns
// once it is lifted (it is also removed when the test ends).
func refuse(t *testing.T, ns, resource string, probe func() client.Object) (lift func()) {
	t.Helper()
	ctx := context.Background()
	name := "refuse-" + resource + "-" + ns
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}},
				ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{"networking.k8s.io"}, APIVersions: []string{"*"}, Resources: []string{resource}},
				}}},
			},
			Validations: []admissionregistrationv1.Validation{{Expression: "false", Message: resource + " refused in this namespace"}},
		}}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: name,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}}}
	for _, o := range []client.Object{policy, binding} {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	inForce := func(want bool) func() error {
		return func() error {
			p := probe()
			p.SetNamespace(ns)
			p.SetName("probe")
			err := k8s.Create(ctx, p)
			if err == nil {
				_ = k8s.Delete(ctx, p)
			}
			if refused := err != nil; refused != want {
				return fmt.Errorf("refused %t (%v)", refused, err)
			}
			return nil
		}
	}
	testservers.Eventually(t, 20*time.Second, 200*time.Millisecond, resource+" refused", inForce(true))
	lifted := false
	lift = func() {
		t.Helper()
		if lifted {
			return
		}
		lifted = true
		for _, o := range []client.Object{binding, policy} {
			if err := k8s.Delete(ctx, o); client.IgnoreNotFound(err) != nil {
				t.Fatal(err)
			}
		}
		testservers.Eventually(t, 20*time.Second, 200*time.Millisecond, resource+" no longer refused", inForce(false))
	}
	t.Cleanup(lift)
	return lift
}

// refuseIngresses: refuse with an Ingress probe.
func refuseIngresses(t *testing.T, ns string) (lift func()) {
	t.Helper()
	return refuse(t, ns, "ingresses", func() client.Object {
		return &networkingv1.Ingress{Spec: networkingv1.IngressSpec{DefaultBackend: &networkingv1.IngressBackend{
			Service: &networkingv1.IngressServiceBackend{Name: "x", Port: networkingv1.ServiceBackendPort{Number: 80}}}}}
	})
}
