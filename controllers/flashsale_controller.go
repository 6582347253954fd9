// Package controllers holds the FlashSale reconciler. What each owned object
// looks like is decided by the pure builders of package specs; this package
// applies them and reports what it observes.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/controllers/specs"
)

// FieldOwner is the manager's server-side apply identity. The purchase pods
// apply status.sold/available/lastReportTime as "flux-order-purchase".
const FieldOwner = "flux-order-manager"

// ReconcileTimeout bounds one reconcile of one sale; DefaultConcurrency is
// how many sales reconcile at once. Together: one sale whose reconcile
// hangs (a refused or unreachable API) can never stop the others.
const (
	ReconcileTimeout   = 2 * time.Minute
	DefaultConcurrency = 4
)

// FlashSaleReconciler keeps every FlashSale's owned objects in shape and
// reports their state in its status.
type FlashSaleReconciler struct {
	client.Client
	Recorder events.EventRecorder
	Options  specs.Options
	// Now is the clock (tests may replace it).
	Now func() time.Time
	// APIReader reads what the manager does not cache (a StorageClass, on
	// a storage resize): an uncached read needs only "get", and fails fast
	// when refused instead of starting a cluster-wide informer. Nil: the
	// client.
	APIReader client.Reader
	// Concurrency is how many sales reconcile at once (0: 4).
	Concurrency int

	wake *boundaries // set by SetupWithManager
	// warned is the failing run of each webhook already raised as a
	// Warning, by "namespace/sale/webhook" (webhooks.go).
	warned sync.Map
}

// The verbs are exactly what the code calls (docs/security.md, A
// least-privilege operator): owned objects are server-side applied (patch;
// create when the apply makes them), read from the cache (get, list,
// watch), and deleted only when an optional one is no longer wanted
// (reconcileObject: policies, the Postgres ConfigMap, Services, workloads,
// HPA, PDB, Ingress); the rest go with the sale by garbage collection,
// which needs no verb of ours. update: only Secrets (generated and renewed
// with Update), flashsales/finalizers (an owner reference that blocks the
// owner's deletion), and Leases, which the purchase pods' Role grants (RBAC
// lets a Role grant only what its creator holds) and leader election uses.
// +kubebuilder:rbac:groups=sales.fluxorder.io,resources=flashsales,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=sales.fluxorder.io,resources=flashsales/status,verbs=get;patch
// +kubebuilder:rbac:groups=sales.fluxorder.io,resources=flashsales/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=deployments;statefulsets,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups="",resources=services;configmaps,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups="",resources=serviceaccounts,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies;ingresses,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=roles;rolebindings,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups=autoscaling,resources=horizontalpodautoscalers,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=storage.k8s.io,resources=storageclasses,verbs=get
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// The metrics endpoint's authentication and authorization filter:
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// Reconcile reads top to bottom: fetch the sale, pin its images, hand the
// purchase replicas to or from an HPA, make sure its credentials exist, apply every owned object, observe, write status, requeue at the
// next clock boundary.
func (r *FlashSaleReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	// A reconcile is bounded: a call that hangs fails this sale's
	// reconcile (retried), never the others'.
	ctx, cancel := context.WithTimeout(ctx, ReconcileTimeout)
	defer cancel()
	sale := &salesv1alpha1.FlashSale{}
	if err := r.Get(ctx, req.NamespacedName, sale); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !sale.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // owned objects go with it (garbage collection)
	}

	if err := r.pinImages(ctx, sale); err != nil {
		return ctrl.Result{}, r.failed(sale, "FlashSale", err)
	}
	hibernating, _ := hibernation(sale, r.now())
	if err := r.handOverReplicas(ctx, sale, hibernating); err != nil {
		return ctrl.Result{}, r.failed(sale, "Deployment", err)
	}

	// Every object is applied even when another fails: a failure is
	// reported in Ready (reason ApplyFailed) and retried, never a reason to
	// leave the rest of the sale stale. Only what would open or switch a
	// datastore waits (closedBy, holdRedisTLS).
	var failures []error
	var pending []pendingUpdate
	trustUnknown := false
	// applied is the sale as applied: a live sale's Redis keeps its TLS
	// setting (holdRedisTLS). Without knowing what Redis runs nothing is
	// applied: the unheld setting would switch a live sale's Redis.
	applied, held, err := r.holdRedisTLS(ctx, sale)
	if err != nil {
		return ctrl.Result{}, r.failed(sale, "Deployment", err)
	}
	if held != nil {
		pending = append(pending, *held)
	}
	certs, err := r.ensureSecrets(ctx, applied)
	if err != nil {
		failures = append(failures, r.failed(sale, "Secret", err))
		// The trust bundle is unknown: the purchase pods keep the one they
		// run (none would roll them now, and back at the next reconcile).
		if certs.trust, err = r.runningTrust(ctx, sale); err != nil {
			failures = append(failures, r.failed(sale, "Deployment", err))
			trustUnknown = true
		}
	}
	webhooks, err := r.ensureWebhooks(ctx, sale)
	if err != nil {
		failures = append(failures, r.failed(sale, "Secret", err))
	}
	// open holds the NetworkPolicies that failed to apply and do not exist:
	// the datastore each closes is not created meanwhile (closedBy).
	open := map[string]bool{}
	for _, o := range desired(applied, r.Options, hibernating, certs.trust) {
		if o.closedBy != "" && open[o.closedBy] {
			failures = append(failures, r.failed(sale, o.kind, fmt.Errorf("%s %s not applied: its NetworkPolicy %s does not exist (a datastore is never up before it is closed)", o.kind, o.obj.GetName(), o.closedBy)))
			continue
		}
		if trustUnknown && o.kind == "Deployment" && o.obj.GetName() == specs.PurchaseName(sale) {
			continue // a failure already: applied once the trust bundle is known
		}
		p, err := r.reconcileObject(ctx, applied, o)
		if err != nil {
			failures = append(failures, r.failed(sale, o.kind, err))
			if o.kind == "NetworkPolicy" && o.obj != nil && !r.exists(ctx, o.obj) {
				open[o.obj.GetName()] = true
			}
		}
		if p != nil {
			pending = append(pending, *p)
		}
	}

	obs, err := r.observe(ctx, sale)
	if err != nil {
		return ctrl.Result{}, err
	}
	obs.pending = pending
	obs.webhooks = webhooks
	now := r.now()
	status := computeStatus(sale, obs, failures, now)
	if meta.IsStatusConditionTrue(status.Conditions, salesv1alpha1.ConditionDatastoreUpdatePending) &&
		!meta.IsStatusConditionTrue(sale.Status.Conditions, salesv1alpha1.ConditionDatastoreUpdatePending) {
		r.Recorder.Eventf(sale, nil, corev1.EventTypeNormal, "DatastoreUpdatePending", "Reconcile", "%s",
			meta.FindStatusCondition(status.Conditions, salesv1alpha1.ConditionDatastoreUpdatePending).Message)
	}
	if meta.IsStatusConditionTrue(status.Conditions, salesv1alpha1.ConditionStatusStale) &&
		!meta.IsStatusConditionTrue(sale.Status.Conditions, salesv1alpha1.ConditionStatusStale) {
		r.Recorder.Eventf(sale, nil, corev1.EventTypeWarning, "StatusStale", "Reconcile",
			"no report from the purchase pods for over %s: the counts may be frozen", StatusStaleAfter)
	}
	if status.Phase != sale.Status.Phase && sale.Status.Phase != "" {
		r.Recorder.Eventf(sale, nil, corev1.EventTypeNormal, "Phase", "Reconcile", "phase %s -> %s", sale.Status.Phase, status.Phase)
	}
	if err := r.applyStatus(ctx, sale, status); err != nil {
		return ctrl.Result{}, err
	}
	// The next boundary from the status just written (the pods' counts
	// kept): the reconcile that makes the sale provisioned starts its
	// StatusStale clock.
	next := sale.DeepCopy()
	next.Status.SoldOutSince, next.Status.Phase, next.Status.Conditions = status.SoldOutSince, status.Phase, status.Conditions
	d := nextBoundary(next, now)
	if !certs.wake.IsZero() && (d <= 0 || certs.wake.Sub(now) < d) {
		d = certs.wake.Sub(now) // the CA's or the certificate's replacement
	}
	if sale.Spec.Delivery != nil && len(sale.Spec.Delivery.Webhooks) > 0 && (d <= 0 || d > WebhookSecretsRefresh) {
		d = WebhookSecretsRefresh
	}
	if w := r.warnFailingWebhooks(sale, now); w > 0 && (d <= 0 || w < d) {
		d = w
	}
	if err := errors.Join(failures...); err != nil {
		// Retried with backoff; the clock's next boundary is kept apart.
		if d > 0 && r.wake != nil {
			r.wake.after(sale, d)
		}
		return ctrl.Result{}, err
	}
	if d > 0 {
		return ctrl.Result{RequeueAfter: d}, nil
	}
	return ctrl.Result{}, nil
}

// runningTrust is the TrustAnnotation the purchase pods' Deployment runs
// with ("" when it does not exist yet or has none).
func (r *FlashSaleReconciler) runningTrust(ctx context.Context, sale *salesv1alpha1.FlashSale) (string, error) {
	dep := &appsv1.Deployment{}
	err := r.Get(ctx, client.ObjectKey{Namespace: sale.Namespace, Name: specs.PurchaseName(sale)}, dep)
	if apierrors.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the purchase pods' trust bundle: %w", err)
	}
	return dep.Spec.Template.Annotations[TrustAnnotation], nil
}

// exists says whether obj exists (in the cache); false when that cannot
// be told.
func (r *FlashSaleReconciler) exists(ctx context.Context, obj client.Object) bool {
	return r.Get(ctx, client.ObjectKeyFromObject(obj), obj.DeepCopyObject().(client.Object)) == nil
}

// reader reads around the cache (APIReader, or the client when unset).
func (r *FlashSaleReconciler) reader() client.Reader {
	if r.APIReader != nil {
		return r.APIReader
	}
	return r.Client
}

func (r *FlashSaleReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *FlashSaleReconciler) failed(sale *salesv1alpha1.FlashSale, kind string, err error) error {
	r.Recorder.Eventf(sale, nil, corev1.EventTypeWarning, "ApplyFailed", "Reconcile", "%s: %v", kind, err)
	return err
}

// ownedObject is one object the sale may own: obj is its desired state, or
// nil when it must not exist, in which case absent names what to delete.
// closedBy names the NetworkPolicy that must exist before obj is applied
// (a datastore's Service and workload).
type ownedObject struct {
	kind     string
	obj      client.Object
	absent   client.Object
	closedBy string
}

func optional[T client.Object](kind string, obj T, isNil bool, absent client.Object) ownedObject {
	if isNil {
		return ownedObject{kind: kind, absent: absent}
	}
	return ownedObject{kind: kind, obj: obj}
}

// desired lists every object a sale owns, in dependency order. A
// hibernating sale has no HPA and no PDB, Redis at 0 and one purchase pod,
// which keeps the orders readable and answers purchases with sale_ended or
// sold out; PostgreSQL and everything else stay. trust is the purchase
// pods' TrustAnnotation (ensureTLS): a new one rolls them.
func desired(s *salesv1alpha1.FlashSale, o specs.Options, hibernating bool, trust string) []ownedObject {
	named := func(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name, Namespace: s.Namespace} }
	pgSvc, pgSts := specs.PostgresService(s), specs.PostgresStatefulSet(s, o)
	redisSvc, redisDep := specs.RedisService(s), specs.RedisDeployment(s, o)
	purchase := specs.PurchaseDeployment(s, o)
	if trust != "" {
		purchase.Spec.Template.Annotations[TrustAnnotation] = trust
	}
	hpa, pdb, ing := specs.PurchaseHPA(s), specs.PurchasePDB(s), specs.PurchaseIngress(s)
	pgCM := specs.PostgresConfigMap(s)
	pgNP, redisNP, purchaseNP := specs.PostgresNetworkPolicy(s), specs.RedisNetworkPolicy(s), specs.PurchaseNetworkPolicy(s, o)
	np := func(name string) client.Object { return &networkingv1.NetworkPolicy{ObjectMeta: named(name)} }
	if hibernating {
		hpa, pdb = nil, nil
		if redisDep != nil {
			redisDep.Spec.Replicas = ptr.To[int32](0)
		}
		purchase.Spec.Replicas = ptr.To[int32](1)
	}
	// Policies first: a datastore is never up before it is closed.
	var pgPolicy, redisPolicy string
	if pgNP != nil {
		pgPolicy = pgNP.Name
	}
	if redisNP != nil {
		redisPolicy = redisNP.Name
	}
	closedBy := func(policy string, o ownedObject) ownedObject {
		if o.obj != nil {
			o.closedBy = policy
		}
		return o
	}
	return []ownedObject{
		optional("NetworkPolicy", pgNP, pgNP == nil, np(specs.PostgresName(s))),
		optional("NetworkPolicy", redisNP, redisNP == nil, np(specs.RedisName(s))),
		optional("NetworkPolicy", purchaseNP, purchaseNP == nil, np(specs.PurchaseName(s))),
		optional("ConfigMap", pgCM, pgCM == nil, &corev1.ConfigMap{ObjectMeta: named(specs.PostgresName(s))}),
		closedBy(pgPolicy, optional("Service", pgSvc, pgSvc == nil, &corev1.Service{ObjectMeta: named(specs.PostgresName(s))})),
		closedBy(pgPolicy, optional("StatefulSet", pgSts, pgSts == nil, &appsv1.StatefulSet{ObjectMeta: named(specs.PostgresName(s))})),
		closedBy(redisPolicy, optional("Service", redisSvc, redisSvc == nil, &corev1.Service{ObjectMeta: named(specs.RedisName(s))})),
		closedBy(redisPolicy, optional("Deployment", redisDep, redisDep == nil, &appsv1.Deployment{ObjectMeta: named(specs.RedisName(s))})),
		{kind: "ServiceAccount", obj: specs.PurchaseServiceAccount(s)},
		{kind: "Role", obj: specs.PurchaseRole(s)},
		{kind: "RoleBinding", obj: specs.PurchaseRoleBinding(s)},
		{kind: "Lease", obj: specs.ReporterLease(s)},
		{kind: "Deployment", obj: purchase},
		{kind: "Service", obj: specs.PurchaseService(s)},
		optional("HorizontalPodAutoscaler", hpa, hpa == nil, &autoscalingv2.HorizontalPodAutoscaler{ObjectMeta: named(specs.PurchaseName(s))}),
		optional("PodDisruptionBudget", pdb, pdb == nil, &policyv1.PodDisruptionBudget{ObjectMeta: named(specs.PurchaseName(s))}),
		optional("Ingress", ing, ing == nil, &networkingv1.Ingress{ObjectMeta: named(specs.IngressName(s))}),
	}
}

// reconcileObject server-side-applies a desired object (putting back any
// field edited by hand, recreating it if deleted) or deletes one that must
// no longer exist, if the sale controls it. A live sale's datastore keeps
// its pod template; pending then says what the operator's would change.
func (r *FlashSaleReconciler) reconcileObject(ctx context.Context, sale *salesv1alpha1.FlashSale, o ownedObject) (*pendingUpdate, error) {
	if o.obj == nil {
		if err := r.Get(ctx, client.ObjectKeyFromObject(o.absent), o.absent); err != nil {
			return nil, client.IgnoreNotFound(err)
		}
		if !metav1.IsControlledBy(o.absent, sale) {
			return nil, nil
		}
		r.Recorder.Eventf(sale, nil, corev1.EventTypeNormal, "Deleted", "Reconcile", "%s %s is no longer wanted", o.kind, o.absent.GetName())
		if err := r.Delete(ctx, o.absent); client.IgnoreNotFound(err) != nil {
			return nil, fmt.Errorf("delete %s %s: %w", o.kind, o.absent.GetName(), err)
		}
		return nil, nil
	}
	var storageErr error
	if sts, ok := o.obj.(*appsv1.StatefulSet); ok {
		storageErr = r.resizeStorage(ctx, sale, sts)
	}
	existing := o.obj.DeepCopyObject().(client.Object)
	err := r.Get(ctx, client.ObjectKeyFromObject(o.obj), existing)
	created := apierrors.IsNotFound(err)
	if err != nil && !created {
		return nil, err
	}
	u, err := applyForm(o.obj)
	if err != nil {
		return nil, err
	}
	var pending *pendingUpdate
	if _, pinned := o.obj.GetAnnotations()[specs.TemplateHashAnnotation]; pinned && !created {
		// A datastore: a live sale keeps its pod template (datastoreApply).
		live, why := datastoresLive(sale, r.now())
		if u, pending, err = r.datastoreApply(ctx, sale, o.obj, existing, live, why); err != nil {
			return nil, fmt.Errorf("apply %s %s: %w", o.kind, o.obj.GetName(), err)
		}
	}
	if err := r.applyUnstructured(ctx, u); err != nil {
		return nil, fmt.Errorf("apply %s %s: %w", o.kind, o.obj.GetName(), err)
	}
	if why := rollsPods(existing, o.obj); !created && why != "" {
		r.Recorder.Eventf(sale, nil, corev1.EventTypeNormal, "RollingUpdate", "Reconcile",
			"replacing the pods of %s %s one at a time (never below the ready count): %s", o.kind, o.obj.GetName(), why)
	}
	if created {
		r.Recorder.Eventf(sale, nil, corev1.EventTypeNormal, "Created", "Reconcile", "created %s %s", o.kind, o.obj.GetName())
	}
	return pending, storageErr
}

// rollsPods says why applying desired over existing replaces pods, if it
// does: the pod template's config hash changes (only what needs new pods
// is in it), or the trust bundle does.
func rollsPods(existing, desired client.Object) string {
	e, ok1 := existing.(*appsv1.Deployment)
	d, ok2 := desired.(*appsv1.Deployment)
	if !ok1 || !ok2 {
		return ""
	}
	changed := func(key string) bool {
		was := e.Spec.Template.Annotations[key]
		return was != "" && was != d.Spec.Template.Annotations[key]
	}
	switch {
	case changed(specs.ConfigHashAnnotation):
		return "their image or resources changed"
	case changed(TrustAnnotation):
		return "the CAs they trust changed"
	}
	return ""
}

// apply sends obj as a server-side apply with the manager's field owner,
// taking over fields someone else changed.
func (r *FlashSaleReconciler) apply(ctx context.Context, obj client.Object) error {
	u, err := applyForm(obj)
	if err != nil {
		return err
	}
	return r.applyUnstructured(ctx, u)
}

func (r *FlashSaleReconciler) applyUnstructured(ctx context.Context, u *unstructured.Unstructured) error {
	return r.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldOwner), client.ForceOwnership)
}

// applyForm is obj as a server-side apply sends it: no status, no
// creation timestamp.
func applyForm(obj client.Object) (*unstructured.Unstructured, error) {
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	delete(u, "status")
	unstructured.RemoveNestedField(u, "metadata", "creationTimestamp")
	return &unstructured.Unstructured{Object: u}, nil
}

// observe reads the workloads whose readiness makes the phase.
func (r *FlashSaleReconciler) observe(ctx context.Context, sale *salesv1alpha1.FlashSale) (observed, error) {
	var obs observed
	get := func(name string, obj client.Object) (bool, error) {
		err := r.Get(ctx, client.ObjectKey{Namespace: sale.Namespace, Name: name}, obj)
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	}
	if sale.Spec.Redis.External == nil {
		d := &appsv1.Deployment{}
		if ok, err := get(specs.RedisName(sale), d); err != nil {
			return obs, err
		} else if ok {
			obs.redis = d
		}
	}
	if sale.Spec.Postgres.External == nil {
		s := &appsv1.StatefulSet{}
		if ok, err := get(specs.PostgresName(sale), s); err != nil {
			return obs, err
		} else if ok {
			obs.postgres = s
		}
	}
	d := &appsv1.Deployment{}
	if ok, err := get(specs.PurchaseName(sale), d); err != nil {
		return obs, err
	} else if ok {
		obs.purchase = d
	}
	return obs, nil
}

// applyStatus server-side-applies the operator's status fields only, so
// the pods' sold/available/lastReportTime are never overwritten.
func (r *FlashSaleReconciler) applyStatus(ctx context.Context, sale *salesv1alpha1.FlashSale, st salesv1alpha1.FlashSaleStatus) error {
	st.Sold, st.Available, st.LastReportTime, st.WaitingRoom = nil, nil, nil, nil
	status, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&st)
	if err != nil {
		return err
	}
	u := &unstructured.Unstructured{Object: map[string]any{"status": status}}
	u.SetGroupVersionKind(salesv1alpha1.GroupVersion.WithKind(salesv1alpha1.FlashSaleKind))
	u.SetName(sale.Name)
	u.SetNamespace(sale.Namespace)
	return r.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldOwner), client.ForceOwnership)
}

// reportMatters lets a status-only change of a FlashSale through only when
// it can change the phase or a condition: the pods' counts reaching or
// leaving sold out, or their seeded inventory changing (growth is
// done: InventorySeeded turns True). Their once-a-second reports otherwise
// cost no reconcile.
var reportMatters = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		oldSale, ok1 := e.ObjectOld.(*salesv1alpha1.FlashSale)
		newSale, ok2 := e.ObjectNew.(*salesv1alpha1.FlashSale)
		if !ok1 || !ok2 {
			return true
		}
		// Not available == 0 alone: with holds, every seat may be sold or
		// held (available 0) before the last holds are confirmed.
		oldN, oldOK := reportedInventory(oldSale)
		newN, newOK := reportedInventory(newSale)
		// A report after StatusStale clears it.
		resumed := meta.IsStatusConditionTrue(oldSale.Status.Conditions, salesv1alpha1.ConditionStatusStale) &&
			!newSale.Status.LastReportTime.Equal(oldSale.Status.LastReportTime)
		return reportedSoldOut(oldSale) != reportedSoldOut(newSale) || oldOK != newOK || oldN != newN || resumed ||
			failingRuns(oldSale) != failingRuns(newSale)
	},
}

// saleOfLabels maps one of the operator's objects to its sale by the
// instance label every one carries.
func saleOfLabels(_ context.Context, obj client.Object) []reconcile.Request {
	l := obj.GetLabels()
	if l[specs.ManagedByLabel] != specs.ManagedBy || l["app.kubernetes.io/instance"] == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: obj.GetNamespace(), Name: l["app.kubernetes.io/instance"]}}}
}

// SetupWithManager watches FlashSales and every kind they own.
func (r *FlashSaleReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.wake = newBoundaries()
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	concurrency := r.Concurrency
	if concurrency <= 0 {
		concurrency = DefaultConcurrency
	}
	return ctrl.NewControllerManagedBy(mgr).
		WithOptions(controller.Options{MaxConcurrentReconciles: concurrency}).
		For(&salesv1alpha1.FlashSale{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, reportMatters))).
		// By label, not owner: the Secrets kept with the data have no
		// owner (reclaimPolicy Retain), and deleting <sale>-ca rotates
		// the CA at once (docs/security.md).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(saleOfLabels)).
		Owns(&corev1.ConfigMap{}).
		Owns(&networkingv1.NetworkPolicy{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.ServiceAccount{}).
		Owns(&rbacv1.Role{}).
		Owns(&rbacv1.RoleBinding{}).
		Owns(&appsv1.Deployment{}).
		Owns(&appsv1.StatefulSet{}).
		Owns(&autoscalingv2.HorizontalPodAutoscaler{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Owns(&networkingv1.Ingress{}).
		// The reporter Lease is renewed by the pods every few seconds:
		// only its deletion matters (it is re-created at once, or the
		// sale's counts would freeze).
		Owns(&coordinationv1.Lease{}, builder.WithPredicates(predicate.Funcs{
			CreateFunc:  func(event.CreateEvent) bool { return false },
			UpdateFunc:  func(event.UpdateEvent) bool { return false },
			DeleteFunc:  func(event.DeleteEvent) bool { return true },
			GenericFunc: func(event.GenericEvent) bool { return false },
		})).
		WatchesRawSource(source.Channel(r.wake.events, &handler.TypedEnqueueRequestForObject[*salesv1alpha1.FlashSale]{})).
		Named("flashsale").
		Complete(r)
}
