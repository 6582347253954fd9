package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/controllers/specs"
	"github.com/flux-order/flux-order/internal/testservers"
)

// onSale creates a sale (ending in an hour, then mutate) and plays kubelet
// until it is OnSale.
func onSale(t *testing.T, ns, name string, mutate ...func(*salesv1alpha1.FlashSale)) *salesv1alpha1.FlashSale {
	t.Helper()
	sale := createSale(t, ns, name, append([]func(*salesv1alpha1.FlashSale){func(s *salesv1alpha1.FlashSale) {
		s.Spec.EndsAt = &metav1.Time{Time: time.Now().Add(time.Hour).Truncate(time.Second)}
	}}, mutate...)...)
	markReady(t, ns, name+"-redis", &appsv1.Deployment{})
	markReady(t, ns, name+"-postgres", &appsv1.StatefulSet{})
	markReady(t, ns, name+"-purchase", &appsv1.Deployment{})
	waitPhase(t, sale, salesv1alpha1.PhaseOnSale, 10*time.Second)
	return sale
}

// upgradeFrom is an operator upgrade from another build: with the manager
// stopped, each object is server-side-applied as that build's builders
// made it (as the manager's field owner); then the manager starts.
func upgradeFrom(t *testing.T, objs ...client.Object) {
	t.Helper()
	stopManager()
	defer func() {
		if err := startManager(testOpts); err != nil {
			t.Fatal(err)
		}
	}()
	for _, obj := range objs {
		u, err := applyForm(obj)
		if err != nil {
			t.Fatal(err)
		}
		if err := k8s.Apply(context.Background(), client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
			t.Fatal(err)
		}
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
			t.Fatal(err)
		}
	}
}

// datastoreUpdate is nil when the sale's DatastoreUpdatePending condition
// has status want and its message holds every one of parts.
func datastoreUpdate(t *testing.T, sale *salesv1alpha1.FlashSale, want metav1.ConditionStatus, parts ...string) error {
	t.Helper()
	s := saleNow(t, sale)
	c := meta.FindStatusCondition(s.Status.Conditions, salesv1alpha1.ConditionDatastoreUpdatePending)
	if c == nil || c.Status != want || c.ObservedGeneration != s.Generation {
		return fmt.Errorf("%s: condition %+v, generation %d", sale.Name, c, s.Generation)
	}
	for _, p := range parts {
		if !strings.Contains(c.Message, p) {
			return fmt.Errorf("%s: the message %q does not name %q", sale.Name, c.Message, p)
		}
	}
	return nil
}

// Issue 21, defect 1: an operator upgrade restarted every live sale's
// datastores, because their pod templates came from the running operator's
// builders. Three sales are OnSale under "another build" (applied as the
// manager's field owner while the manager is stopped): one whose
// PostgreSQL template differs, with no recorded pin (today's operator
// records none), and whose Redis template is the same; one whose Redis
// template differs under a pin of a newer kind. The upgraded manager
// restarts nothing, adopts the unchanged one, and says what waits; the
// opt-in and the end of a sale apply it.
func TestUpgrade_LiveSale_KeepsItsDatastoreTemplates_UntilOptInOrEnd(t *testing.T) {
	ns := newNamespace(t)
	a, b := onSale(t, ns, "keep-a"), onSale(t, ns, "keep-b")
	a, b = saleNow(t, a), saleNow(t, b) // with their pinned images

	// a: PostgreSQL with another startup probe period, both without pins.
	pgOld := specs.PostgresStatefulSet(a, testOpts)
	pgOld.Spec.Template.Spec.Containers[0].StartupProbe.PeriodSeconds = 10
	delete(pgOld.Annotations, specs.TemplateHashAnnotation)
	delete(pgOld.Annotations, specs.TemplateInputsAnnotation)
	redisSame := specs.RedisDeployment(a, testOpts)
	redisSame.Annotations = nil
	// b: Redis with another readiness period, pinned by that build.
	redisOld := specs.RedisDeployment(b, testOpts)
	redisOld.Spec.Template.Spec.Containers[0].ReadinessProbe.PeriodSeconds = 7
	redisOld.Annotations[specs.TemplateHashAnnotation] = "0123456789abcdef"
	upgradeFrom(t, pgOld, redisSame, redisOld)
	before := map[string]client.Object{"keep-a-postgres": pgOld, "keep-a-redis": redisSame, "keep-b-redis": redisOld}

	testservers.Eventually(t, 10*time.Second, poll, "the waiting updates named", func() error {
		if err := datastoreUpdate(t, a, metav1.ConditionTrue, "postgres: containers[postgres].startupProbe.periodSeconds"); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(saleNow(t, a).Status.Conditions, salesv1alpha1.ConditionDatastoreUpdatePending); strings.Contains(c.Message, "redis") {
			return fmt.Errorf("a's Redis template is unchanged and must not be named: %q", c.Message)
		}
		return datastoreUpdate(t, b, metav1.ConditionTrue, "redis: containers[redis].readinessProbe.periodSeconds")
	})
	// A reconcile for an edit of the sale keeps them too.
	patchSpec(t, a, func(s *salesv1alpha1.FlashSale) { s.Spec.MaxTicketsPerBuyer = 3 })
	patchSpec(t, b, func(s *salesv1alpha1.FlashSale) { s.Spec.MaxTicketsPerBuyer = 3 })
	waitObserved(t, a)
	waitObserved(t, b)
	unchanged := func(name string, obj client.Object) {
		t.Helper()
		was := before[name]
		if err := get(t, ns, name, obj); err != nil {
			t.Fatal(err)
		}
		var wasTemplate, template any
		switch o := obj.(type) {
		case *appsv1.StatefulSet:
			wasTemplate, template = was.(*appsv1.StatefulSet).Spec.Template, o.Spec.Template
		case *appsv1.Deployment:
			wasTemplate, template = was.(*appsv1.Deployment).Spec.Template, o.Spec.Template
		}
		// (A Deployment's generation also counts its annotations, the pins:
		// only the template replaces pods.)
		if !equality.Semantic.DeepEqual(template, wasTemplate) {
			t.Errorf("%s: the pod template changed, its pod would be replaced mid-sale:\n%s", name, cmp.Diff(wasTemplate, template))
		}
	}
	pg, redisA, redisB := &appsv1.StatefulSet{}, &appsv1.Deployment{}, &appsv1.Deployment{}
	unchanged("keep-a-postgres", pg)
	unchanged("keep-a-redis", redisA)
	unchanged("keep-b-redis", redisB)
	if redisA.Annotations[specs.TemplateHashAnnotation] == "" || pg.Annotations[specs.TemplateInputsAnnotation] == "" {
		t.Errorf("the sale must be adopted: pins %v, %v", redisA.Annotations, pg.Annotations)
	}
	if pg.Annotations[specs.TemplateHashAnnotation] != "" {
		t.Errorf("the kept PostgreSQL template must not be recorded as the new one: %v", pg.Annotations)
	}
	if err := findEvent(t, ns, "DatastoreUpdatePending"); err != nil {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}

	// The platform team opts in for a: its PostgreSQL takes the template.
	patchSpec(t, a, func(s *salesv1alpha1.FlashSale) { s.Spec.DatastoreUpdates = salesv1alpha1.DatastoreUpdatesImmediate })
	testservers.Eventually(t, 10*time.Second, poll, "a's update applied on opt-in", func() error {
		if err := get(t, ns, "keep-a-postgres", pg); err != nil {
			return err
		}
		if p := pg.Spec.Template.Spec.Containers[0].StartupProbe.PeriodSeconds; p != 5 {
			return fmt.Errorf("startupProbe.periodSeconds %d, want the builder's 5", p)
		}
		return datastoreUpdate(t, a, metav1.ConditionFalse)
	})
	if err := findEvent(t, ns, "DatastoreUpdated"); err != nil {
		t.Error(err)
	}
	// Applied, the template is the builders' exactly (what the server
	// defaulted while it was kept is defaulted the same way).
	want := specs.PostgresStatefulSet(saleNow(t, a), testOpts)
	if pg.Annotations[specs.TemplateHashAnnotation] != want.Annotations[specs.TemplateHashAnnotation] {
		t.Errorf("pin %q, want %q", pg.Annotations[specs.TemplateHashAnnotation], want.Annotations[specs.TemplateHashAnnotation])
	}
	unchanged("keep-b-redis", redisB)

	// b ends: once it hibernates, its Redis takes the template.
	patchSpec(t, b, func(s *salesv1alpha1.FlashSale) {
		s.Spec.EndsAt = &metav1.Time{Time: time.Now().Add(time.Second).Truncate(time.Second)}
	})
	testservers.Eventually(t, 10*time.Second, poll, "b's update applied once it ended", func() error {
		if err := get(t, ns, "keep-b-redis", redisB); err != nil {
			return err
		}
		if p := redisB.Spec.Template.Spec.Containers[0].ReadinessProbe.PeriodSeconds; p != 2 {
			return fmt.Errorf("readinessProbe.periodSeconds %d, want the builder's 2", p)
		}
		return datastoreUpdate(t, b, metav1.ConditionFalse)
	})
}

// An edit of the sale's own datastore fields is explicit: it applies at
// once, live or not, carrying the operator's waiting change with it.
func TestUpgrade_LiveSale_EditOfItsDatastoreFields_AppliesAtOnce(t *testing.T) {
	ns := newNamespace(t)
	sale := onSale(t, ns, "edit")
	sale = saleNow(t, sale)
	redisOld := specs.RedisDeployment(sale, testOpts)
	redisOld.Spec.Template.Spec.Containers[0].ReadinessProbe.PeriodSeconds = 7
	redisOld.Annotations[specs.TemplateHashAnnotation] = "0123456789abcdef"
	upgradeFrom(t, redisOld)
	testservers.Eventually(t, 10*time.Second, poll, "the waiting update named", func() error {
		return datastoreUpdate(t, sale, metav1.ConditionTrue, "redis: containers[redis].readinessProbe.periodSeconds")
	})
	patchSpec(t, sale, func(s *salesv1alpha1.FlashSale) { s.Spec.Redis.Image = "redis:7.4" })
	redis := &appsv1.Deployment{}
	testservers.Eventually(t, 10*time.Second, poll, "the edit applied with the waiting change", func() error {
		if err := get(t, ns, "edit-redis", redis); err != nil {
			return err
		}
		c := redis.Spec.Template.Spec.Containers[0]
		if c.Image != "redis:7.4" || c.ReadinessProbe.PeriodSeconds != 2 {
			return fmt.Errorf("image %s, readinessProbe.periodSeconds %d", c.Image, c.ReadinessProbe.PeriodSeconds)
		}
		return datastoreUpdate(t, sale, metav1.ConditionFalse)
	})
}

func TestDiffFields_NamesWhatChanges_ListItemsByName(t *testing.T) {
	container := func(period int64, image string) map[string]any {
		return map[string]any{"name": "postgres", "image": image, "startupProbe": map[string]any{"periodSeconds": period}}
	}
	template := func(c map[string]any, annotations map[string]any) map[string]any {
		t := map[string]any{"spec": map[string]any{"containers": []any{c}}}
		if annotations != nil {
			t["metadata"] = map[string]any{"annotations": annotations}
		}
		return t
	}
	for _, c := range []struct {
		name string
		a, b map[string]any
		want []string
	}{
		{"same", template(container(5, "postgres:15"), nil), template(container(5, "postgres:15"), nil), nil},
		{"probe period", template(container(10, "postgres:15"), nil), template(container(5, "postgres:15"), nil),
			[]string{"containers[postgres].startupProbe.periodSeconds"}},
		{"two fields and an annotation", template(container(10, "postgres:15"), nil),
			template(container(5, "postgres:15.10"), map[string]any{"x": "y"}),
			[]string{"metadata", "containers[postgres].image", "containers[postgres].startupProbe.periodSeconds"}},
		{"a container added", template(container(5, "postgres:15"), nil),
			map[string]any{"spec": map[string]any{"containers": []any{container(5, "postgres:15"), map[string]any{"name": "exporter"}}}},
			[]string{"containers[exporter]"}},
	} {
		if got := diffFields(c.a, c.b); strings.Join(got, " ") != strings.Join(c.want, " ") {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
}

func TestDatastoresLive_FromFirstReadyUntilHibernation_ExceptFarBeforeTheOpening(t *testing.T) {
	now := time.Date(2027, 1, 10, 10, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { return &metav1.Time{Time: now.Add(d)} }
	for _, c := range []struct {
		name string
		sale salesv1alpha1.FlashSale
		want bool
	}{
		{"not provisioned yet", salesv1alpha1.FlashSale{Status: salesv1alpha1.FlashSaleStatus{Phase: salesv1alpha1.PhaseProvisioning}}, false},
		{"on sale", salesv1alpha1.FlashSale{Status: salesv1alpha1.FlashSaleStatus{Phase: salesv1alpha1.PhaseOnSale}}, true},
		{"paused", salesv1alpha1.FlashSale{Status: salesv1alpha1.FlashSaleStatus{Phase: salesv1alpha1.PhasePaused}}, true},
		{"degraded", salesv1alpha1.FlashSale{Status: salesv1alpha1.FlashSaleStatus{Phase: salesv1alpha1.PhaseDegraded}}, true},
		{"scheduled an hour ahead", salesv1alpha1.FlashSale{Spec: salesv1alpha1.FlashSaleSpec{StartsAt: at(time.Hour)},
			Status: salesv1alpha1.FlashSaleStatus{Phase: salesv1alpha1.PhaseScheduled}}, false},
		{"scheduled 10 minutes ahead", salesv1alpha1.FlashSale{Spec: salesv1alpha1.FlashSaleSpec{StartsAt: at(10 * time.Minute)},
			Status: salesv1alpha1.FlashSaleStatus{Phase: salesv1alpha1.PhaseScheduled}}, true},
		{"scheduled an hour ahead, its queue open in 10 minutes", salesv1alpha1.FlashSale{Spec: salesv1alpha1.FlashSaleSpec{StartsAt: at(time.Hour),
			WaitingRoom: &salesv1alpha1.WaitingRoomSpec{AdmitPerSecond: 1, JoinFrom: at(10 * time.Minute)}},
			Status: salesv1alpha1.FlashSaleStatus{Phase: salesv1alpha1.PhaseScheduled}}, true},
		{"ended", salesv1alpha1.FlashSale{Spec: salesv1alpha1.FlashSaleSpec{EndsAt: at(-time.Second)},
			Status: salesv1alpha1.FlashSaleStatus{Phase: salesv1alpha1.PhaseOnSale}}, false},
	} {
		if got, why := datastoresLive(&c.sale, now); got != c.want || (!got && why == "") {
			t.Errorf("%s: live %v (%q), want %v", c.name, got, why, c.want)
		}
	}
}

// Review finding: while an object failed to apply (Ready False,
// ApplyFailed, the sale still OnSale), a moment without a ready purchase
// pod made the live sale Provisioning instead of Degraded, and a
// Provisioning sale is not live: the operator's waiting Redis template was
// applied, restarting Redis mid-sale. Provisioned is now the phase, which
// ApplyFailed does not overwrite.
func TestLiveSale_ApplyFailedThenReadinessBlip_DegradedAndItsDatastoreTemplateStillWaits(t *testing.T) {
	ns := newNamespace(t)
	sale := onSale(t, ns, "blip", func(s *salesv1alpha1.FlashSale) {
		s.Spec.Ingress = &salesv1alpha1.IngressSpec{Host: "a.example"}
	})
	sale = saleNow(t, sale) // with its pinned images
	older := specs.RedisDeployment(sale, testOpts)
	older.Spec.Template.Spec.Containers[0].ReadinessProbe.PeriodSeconds = 7
	older.Annotations[specs.TemplateHashAnnotation] = "0123456789abcdef"
	upgradeFrom(t, older)
	testservers.Eventually(t, 10*time.Second, poll, "the operator's Redis template waits", func() error {
		return datastoreUpdate(t, sale, metav1.ConditionTrue, "redis: containers[redis].readinessProbe.periodSeconds")
	})

	refuseIngresses(t, ns)
	patchSpec(t, sale, func(s *salesv1alpha1.FlashSale) { s.Spec.Ingress.Host = "b.example" })
	testservers.Eventually(t, 10*time.Second, poll, "Ready ApplyFailed, still OnSale", func() error {
		s := saleNow(t, sale)
		if c := meta.FindStatusCondition(s.Status.Conditions, salesv1alpha1.ConditionReady); c == nil || c.Reason != "ApplyFailed" || s.Status.Phase != salesv1alpha1.PhaseOnSale {
			return fmt.Errorf("phase %s, Ready %+v", s.Status.Phase, c)
		}
		return nil
	})

	// A moment without a ready purchase pod (a node drain, a probe blip).
	testservers.Eventually(t, 5*time.Second, poll, "purchase pods unready", func() error {
		dep := &appsv1.Deployment{}
		if err := get(t, ns, "blip-purchase", dep); err != nil {
			return err
		}
		dep.Status.ReadyReplicas, dep.Status.AvailableReplicas = 0, 0
		return k8s.Status().Update(context.Background(), dep)
	})
	waitPhase(t, sale, salesv1alpha1.PhaseDegraded, 10*time.Second)
	reconcileNow(t, sale)
	if s := saleNow(t, sale); s.Status.Phase != salesv1alpha1.PhaseDegraded {
		t.Fatalf("phase %s, want Degraded", s.Status.Phase)
	}
	redis := &appsv1.Deployment{}
	if err := get(t, ns, "blip-redis", redis); err != nil {
		t.Fatal(err)
	}
	if p := redis.Spec.Template.Spec.Containers[0].ReadinessProbe.PeriodSeconds; p != 7 {
		t.Errorf("Redis's readiness period is %d: the waiting template was applied mid-sale (a restart)", p)
	}
	if err := datastoreUpdate(t, sale, metav1.ConditionTrue, "redis: containers[redis].readinessProbe.periodSeconds"); err != nil {
		t.Error(err)
	}
	if err := findEvent(t, ns, "DatastoreUpdated"); err == nil {
		t.Error("a DatastoreUpdated event was recorded for the live sale")
	}
}
