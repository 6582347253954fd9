package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/controllers/specs"
)

// DatastoreUpdateLead is how far ahead of its opening (startsAt, or the
// waiting room's joinFrom when earlier) a Scheduled sale still takes the
// operator's changes to its datastores' pod templates.
const DatastoreUpdateLead = 30 * time.Minute

// datastoresLive says whether restarting the sale's Redis or PostgreSQL now
// would disturb it, and if not, why not: it is live from its first Ready
// until it hibernates (Ended, or SoldOut for hibernateAfter), except while
// its opening is more than DatastoreUpdateLead ahead. Paused and Degraded
// are live: a pause is often short, and buyers' pages and queues stay on.
func datastoresLive(sale *salesv1alpha1.FlashSale, now time.Time) (bool, string) {
	if hibernating, why := hibernation(sale, now); hibernating {
		return false, "the sale hibernates (" + why + ")"
	}
	if !provisioned(sale) {
		return false, "the sale is not provisioned yet"
	}
	if at, ok := opensAt(sale); ok && now.Add(DatastoreUpdateLead).Before(at) {
		return false, fmt.Sprintf("the sale opens in more than %s", DatastoreUpdateLead)
	}
	return true, ""
}

// opensAt is when buyers first arrive: startsAt, or the waiting room's
// joinFrom when that is earlier; false when the sale has no start.
func opensAt(sale *salesv1alpha1.FlashSale) (time.Time, bool) {
	if sale.Spec.StartsAt == nil {
		return time.Time{}, false
	}
	at := sale.Spec.StartsAt.Time
	if w := sale.Spec.WaitingRoom; w != nil && w.JoinFrom != nil && w.JoinFrom.Before(sale.Spec.StartsAt) {
		at = w.JoinFrom.Time
	}
	return at, true
}

// holdRedisTLS is the sale as the reconcile applies it: while it is live,
// its managed Redis keeps serving as it does (TLS only, or plain), and
// with it the Redis URL in its Secret and the purchase pods' settings,
// whatever spec.redis.tls says; pending then names the switch. Switching
// at once would make Redis serve one way while the running purchase pods
// connect the other until each has rolled: every purchase meanwhile a
// 503. It applies once the sale is not live, or at once with
// spec.datastoreUpdates Immediate (docs/operations.md).
func (r *FlashSaleReconciler) holdRedisTLS(ctx context.Context, sale *salesv1alpha1.FlashSale) (*salesv1alpha1.FlashSale, *pendingUpdate, error) {
	if sale.Spec.Redis.External != nil || sale.Spec.DatastoreUpdates == salesv1alpha1.DatastoreUpdatesImmediate {
		return sale, nil, nil
	}
	if live, _ := datastoresLive(sale, r.now()); !live {
		return sale, nil, nil
	}
	dep := &appsv1.Deployment{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: sale.Namespace, Name: specs.RedisName(sale)}, dep); apierrors.IsNotFound(err) {
		return sale, nil, nil // nothing runs yet: nothing to keep
	} else if err != nil {
		// Fail closed: the unheld setting would switch a live Redis.
		return nil, nil, fmt.Errorf("read what Redis serves: %w", err)
	}
	running := servesTLS(dep)
	if running == sale.Spec.Redis.TLS {
		return sale, nil, nil
	}
	held := sale.DeepCopy()
	held.Spec.Redis.TLS = running
	return held, &pendingUpdate{component: "redis", fields: []string{fmt.Sprintf("spec.redis.tls (%t, wanted %t)", running, sale.Spec.Redis.TLS)}}, nil
}

// servesTLS says whether a Redis Deployment runs redis-server with TLS.
func servesTLS(dep *appsv1.Deployment) bool {
	for _, c := range dep.Spec.Template.Spec.Containers {
		if c.Name == "redis" && slices.Contains(c.Args, "--tls-port") {
			return true
		}
	}
	return false
}

// pendingUpdate is an operator's change to a datastore's pod template that
// waits for the sale to stop being live.
type pendingUpdate struct {
	component string   // redis, postgres
	fields    []string // the template's fields that would change
}

func (p pendingUpdate) String() string {
	const most = 8
	fields := p.fields
	more := ""
	if len(fields) > most {
		fields, more = fields[:most], fmt.Sprintf(" and %d more", len(fields)-most)
	}
	return p.component + ": " + strings.Join(fields, ", ") + more
}

// datastoreApply is what to apply for a managed datastore's workload
// (desired, a Redis Deployment or PostgreSQL StatefulSet built for this
// operator), with pending set when the operator's new pod template waits.
//
// Server-side apply of desired would replace the live pod template, and
// with it the datastore's pod, whenever the builders changed, which is
// every operator upgrade that touches them. So:
//   - the template the builders made is what was last applied
//     (specs.TemplateHashAnnotation): apply it, nothing changes;
//   - otherwise a server-side dry run tells what applying it would change
//     in the live template (with the server's defaults on both sides). No
//     change (a sale adopted from an operator that did not record the
//     hash): apply it, which records the hash;
//   - a change made by an edit of the sale's own datastore fields
//     (specs.TemplateInputsAnnotation differs), while the sale is not live,
//     or with spec.datastoreUpdates Immediate: apply it;
//   - otherwise the live sale keeps its template: the apply carries the pod
//     template exactly as this manager last applied it (its managed fields,
//     extracted from the live object: the server's defaults and other
//     managers' fields, such as older operators' certificate restart
//     stamp, stay out of our apply), and everything else as built.
func (r *FlashSaleReconciler) datastoreApply(ctx context.Context, sale *salesv1alpha1.FlashSale, desired, cached client.Object, live bool, why string) (*unstructured.Unstructured, *pendingUpdate, error) {
	u, err := applyForm(desired)
	if err != nil {
		return nil, nil, err
	}
	want := desired.GetAnnotations()
	if cached == nil || cached.GetAnnotations()[specs.TemplateHashAnnotation] == want[specs.TemplateHashAnnotation] {
		return u, nil, nil
	}
	// Decide on the object as it is now, not as the cache last saw it.
	current := &unstructured.Unstructured{}
	current.SetGroupVersionKind(u.GroupVersionKind())
	if err := r.reader().Get(ctx, client.ObjectKeyFromObject(desired), current); apierrors.IsNotFound(err) {
		return u, nil, nil
	} else if err != nil {
		return nil, nil, err
	}
	have := current.GetAnnotations()
	if have[specs.TemplateHashAnnotation] == want[specs.TemplateHashAnnotation] {
		return u, nil, nil
	}
	dry := u.DeepCopy()
	if err := r.Apply(ctx, client.ApplyConfigurationFromUnstructured(dry), client.FieldOwner(FieldOwner), client.ForceOwnership, client.DryRunAll); err != nil {
		return nil, nil, fmt.Errorf("dry-run apply: %w", err)
	}
	oldTemplate, _, _ := unstructured.NestedMap(current.Object, "spec", "template")
	newTemplate, _, _ := unstructured.NestedMap(dry.Object, "spec", "template")
	fields := diffFields(oldTemplate, newTemplate)
	component := desired.GetLabels()["app.kubernetes.io/component"]
	edited := have[specs.TemplateInputsAnnotation] != "" && have[specs.TemplateInputsAnnotation] != want[specs.TemplateInputsAnnotation]
	immediate := sale.Spec.DatastoreUpdates == salesv1alpha1.DatastoreUpdatesImmediate
	switch {
	case len(fields) == 0 || edited:
		return u, nil, nil
	case !live || immediate:
		if immediate && live {
			why = "spec.datastoreUpdates is Immediate"
		}
		r.Recorder.Eventf(sale, nil, corev1.EventTypeNormal, "DatastoreUpdated", "Reconcile",
			"applying the operator's new pod template to %s %s (%s): %s", desired.GetObjectKind().GroupVersionKind().Kind, desired.GetName(), why, strings.Join(fields, ", "))
		return u, nil, nil
	}
	ours, err := ownTemplate(current)
	if err != nil {
		return nil, nil, err
	}
	if ours == nil {
		unstructured.RemoveNestedField(u.Object, "spec", "template")
	} else if err := unstructured.SetNestedMap(u.Object, ours, "spec", "template"); err != nil {
		return nil, nil, err
	}
	// The hash stays that of the template kept (none, if it was adopted);
	// the inputs are recorded, so a later edit of the sale is told apart.
	annotations := u.GetAnnotations()
	if h := have[specs.TemplateHashAnnotation]; h != "" {
		annotations[specs.TemplateHashAnnotation] = h
	} else {
		delete(annotations, specs.TemplateHashAnnotation)
	}
	u.SetAnnotations(annotations)
	return u, &pendingUpdate{component: component, fields: fields}, nil
}

// ownTemplate is the pod template of a live Deployment or StatefulSet as
// far as the manager's field owner applied it; nil when it owns none.
func ownTemplate(current *unstructured.Unstructured) (map[string]any, error) {
	var ac any
	var err error
	switch current.GetKind() {
	case "StatefulSet":
		sts := &appsv1.StatefulSet{}
		if err = runtime.DefaultUnstructuredConverter.FromUnstructured(current.Object, sts); err == nil {
			var x *appsv1ac.StatefulSetApplyConfiguration
			x, err = appsv1ac.ExtractStatefulSet(sts, FieldOwner)
			if err == nil && x.Spec != nil {
				ac = x.Spec.Template
			}
		}
	case "Deployment":
		dep := &appsv1.Deployment{}
		if err = runtime.DefaultUnstructuredConverter.FromUnstructured(current.Object, dep); err == nil {
			var x *appsv1ac.DeploymentApplyConfiguration
			x, err = appsv1ac.ExtractDeployment(dep, FieldOwner)
			if err == nil && x.Spec != nil {
				ac = x.Spec.Template
			}
		}
	default:
		return nil, fmt.Errorf("no pod template to keep in a %s", current.GetKind())
	}
	if err != nil {
		return nil, fmt.Errorf("extract the applied pod template: %w", err)
	}
	if ac == nil || reflect.ValueOf(ac).IsNil() {
		return nil, nil
	}
	b, err := json.Marshal(ac)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	return m, json.Unmarshal(b, &m)
}

// diffFields lists the paths at which two pod templates (as the API server
// returns them) differ, list items named by their name where they have one:
// "containers[postgres].startupProbe.periodSeconds". The template's spec is
// the root; its metadata is "metadata".
func diffFields(a, b map[string]any) []string {
	var out []string
	diffValue(a, b, "", &out)
	for i, p := range out {
		out[i] = strings.TrimPrefix(p, "spec.")
	}
	return out
}

func diffValue(a, b any, path string, out *[]string) {
	am, aIsMap := a.(map[string]any)
	bm, bIsMap := b.(map[string]any)
	if aIsMap && bIsMap {
		keys := map[string]bool{}
		for k := range am {
			keys[k] = true
		}
		for k := range bm {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		for _, k := range sorted {
			p := k
			if path != "" && !strings.HasPrefix(k, "[") {
				p = path + "." + k
			} else if path != "" {
				p = path + k
			}
			diffValue(am[k], bm[k], p, out)
		}
		return
	}
	al, aIsList := a.([]any)
	bl, bIsList := b.([]any)
	if aIsList && bIsList {
		if an, bn := byName(al), byName(bl); an != nil && bn != nil {
			diffValue(an, bn, path, out)
			return
		}
		if len(al) == len(bl) {
			for i := range al {
				diffValue(al[i], bl[i], fmt.Sprintf("%s[%d]", path, i), out)
			}
			return
		}
	}
	if !reflect.DeepEqual(a, b) {
		*out = append(*out, path)
	}
}

// byName keys a list of named items "[name]" (containers, volumes, env,
// ports); nil when an item has no name or two share one.
func byName(l []any) map[string]any {
	m := map[string]any{}
	for _, item := range l {
		obj, ok := item.(map[string]any)
		name, _ := obj["name"].(string)
		if !ok || name == "" {
			return nil
		}
		if _, dup := m["["+name+"]"]; dup {
			return nil
		}
		m["["+name+"]"] = item
	}
	return m
}
