package controllers

import (
	"errors"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/controllers/specs"
)

// observed is what the reconciler saw of the owned workloads; nil means the
// object does not exist (yet). External dependencies count as ready.
type observed struct {
	redis    *appsv1.Deployment
	postgres *appsv1.StatefulSet
	purchase *appsv1.Deployment
	// pending are the operator's datastore template changes that wait for
	// the sale to stop being live.
	pending []pendingUpdate
	// webhooks is the WebhooksReady check (ensureWebhooks).
	webhooks check
}

type check struct {
	ready          bool
	reason, detail string
}

func workloadCheck(external bool, exists bool, ready int32, what string) check {
	switch {
	case external:
		return check{true, "External", what + " is external"}
	case !exists:
		return check{false, "NotCreated", what + " does not exist yet"}
	case ready < 1:
		return check{false, "NotReady", what + " has no ready pod yet"}
	}
	return check{true, "Ready", what + " is ready"}
}

// rolledOut says whether every pod of dep runs its current template, as
// `kubectl rollout status` decides: the generation observed, every wanted
// replica updated and available, no old one left.
func rolledOut(dep *appsv1.Deployment) bool {
	if dep.Status.ObservedGeneration < dep.Generation {
		return false
	}
	s, want := dep.Status, ptr.Deref(dep.Spec.Replicas, 1)
	return s.UpdatedReplicas >= want && s.Replicas == s.UpdatedReplicas && s.AvailableReplicas >= s.UpdatedReplicas
}

// settled is c, except that a sale still provisioning waits for dep's
// rollout: a spec changed while it provisions (redis.tls, say) must not
// put the sale on sale with pods of the template before, which the
// Secrets they read at start may no longer fit (seen: a pod of the plain
// template got the new rediss:// URL without the CA to check it, stayed
// ready, and answered its buyers 503). Once provisioned, a rollout is
// routine: ready pods keep the sale on sale.
func settled(sale *salesv1alpha1.FlashSale, c check, dep *appsv1.Deployment, what string) check {
	if !c.ready || dep == nil || provisioned(sale) || rolledOut(dep) {
		return c
	}
	return check{false, "RollingOut", what + " is rolling out its current pod template"}
}

// computeStatus derives every operator-owned status field from the sale,
// what was observed and the clock. It keeps the pods' fields (sold,
// available, lastReportTime) as they are: they are not the operator's.
//
// failures are the objects that could not be applied: they make Ready
// False with reason ApplyFailed and a message naming each, while the phase
// still says what the sale's running workloads do.
func computeStatus(sale *salesv1alpha1.FlashSale, obs observed, failures []error, now time.Time) salesv1alpha1.FlashSaleStatus {
	prev := sale.Status
	st := salesv1alpha1.FlashSaleStatus{
		ObservedGeneration: sale.Generation,
		Tickets:            sale.Spec.Tickets,
		URL:                specs.URL(sale),
		Selector:           labels.SelectorFromSet(specs.SelectorLabels(sale, specs.ComponentPurchase)).String(),
		Conditions:         append([]metav1.Condition(nil), prev.Conditions...),
	}

	var redisReady, pgReady, purchaseReady int32
	if obs.redis != nil {
		redisReady = obs.redis.Status.ReadyReplicas
	}
	if obs.postgres != nil {
		pgReady = obs.postgres.Status.ReadyReplicas
	}
	if obs.purchase != nil {
		purchaseReady = obs.purchase.Status.ReadyReplicas
		st.Replicas = obs.purchase.Status.Replicas
		st.ReadyReplicas = purchaseReady
	}
	hibernating, why := hibernation(sale, now)
	redis := settled(sale, workloadCheck(sale.Spec.Redis.External != nil, obs.redis != nil, redisReady, "Redis"), obs.redis, "Redis")
	if hibernating && sale.Spec.Redis.External == nil {
		redis = check{true, "Hibernating", "Redis is scaled to 0 while the sale hibernates"}
	}
	pg := workloadCheck(sale.Spec.Postgres.External != nil, obs.postgres != nil, pgReady, "PostgreSQL")
	api := settled(sale, workloadCheck(false, obs.purchase != nil, purchaseReady, "the purchase API"), obs.purchase, "the purchase API")

	// A purchase pod becomes ready only after migrating and seeding its
	// inventory; the pods' report tells whether the database holds every
	// seat of the spec (sold + held + available = seeded seats). Growth does not
	// stop the sale: the seats that exist stay on sale while the running
	// pods seed the new ones, so Growing is not a reason to leave OnSale.
	seeded := check{false, "WaitingForPurchaseAPI", "no purchase pod has seeded the inventory yet"}
	growing := false
	if api.ready {
		seeded = check{true, "Seeded", "the inventory is seeded"}
		if n, ok := reportedInventory(sale); ok && n < sale.Spec.Tickets {
			seeded = check{false, "Growing", fmt.Sprintf("the purchase pods are seeding the new tickets (%d of %d seeded)", n, sale.Spec.Tickets)}
			growing = true
		}
	}
	// More seats in the database than the spec asks for: a FlashSale
	// re-created with fewer tickets over its retained data. The pods serve
	// the seats asked for (no crash loop), but the sale is Degraded until
	// the spec covers the stored inventory again.
	stored, larger := reportedInventory(sale)
	larger = larger && stored > sale.Spec.Tickets
	if larger {
		seeded = check{false, "StoredInventoryLarger", fmt.Sprintf("the database holds %d seats, more than spec.tickets (%d): it was kept from an earlier sale of this name (postgres.reclaimPolicy Retain); tickets never shrink, so set spec.tickets to at least %d to resume it, or delete the retained data (docs/operations.md)", stored, sale.Spec.Tickets, stored)}
	}
	all := redis.ready && pg.ready && api.ready && (seeded.ready || growing)
	st.Phase = phase(sale, all, provisioned(sale) || larger, now)
	ready := check{true, string(st.Phase), "the sale is provisioned"}
	if !all {
		ready = check{false, string(st.Phase), "waiting for " + firstNotReady(redis, pg, api, seeded)}
	}
	if len(failures) > 0 {
		ready = check{false, "ApplyFailed", applyFailedMessage(failures)}
	}
	stale := check{false, "Reporting", "the purchase pods report the counts"}
	switch at, ok := staleAt(sale); {
	case !all && !provisioned(sale):
		stale = check{false, "NotProvisioned", "no report is expected before the sale is provisioned"}
	case !api.ready:
		stale = check{false, "NoPurchasePod", "no report is expected while no purchase pod is ready"}
	case ok && !now.Before(at):
		stale = check{true, "NoRecentReport", fmt.Sprintf("the purchase pods have not reported the counts for over %s: sold and available may be frozen (docs/operations.md, \"Stale status\")", StatusStaleAfter)}
	}
	st.Hibernated = hibernating
	hibernated := check{false, "Awake", "the sale runs its full set of pods"}
	if hibernating {
		hibernated = check{true, why, "the sale hibernates (" + why + "): no HPA or PDB, Redis at 0, one purchase pod; extend endsAt or add tickets to wake it"}
	}
	update := check{false, "UpToDate", "the datastores run the operator's current pod templates"}
	if len(obs.pending) > 0 {
		var what []string
		for _, p := range obs.pending {
			what = append(what, p.String())
		}
		update = check{true, "SaleLive", fmt.Sprintf("changes to the datastores' pods wait until the sale is not live (Ended, hibernated, or Scheduled more than %s before it opens) or spec.datastoreUpdates is Immediate, so that no datastore restarts mid-sale; they would change %s", DatastoreUpdateLead, strings.Join(what, "; "))}
	}
	if reportedSoldOut(sale) {
		st.SoldOutSince = prev.SoldOutSince
		if st.SoldOutSince == nil {
			st.SoldOutSince = &metav1.Time{Time: now}
		}
	}
	for _, c := range []struct {
		typ string
		check
	}{
		{salesv1alpha1.ConditionRedisReady, redis},
		{salesv1alpha1.ConditionPostgresReady, pg},
		{salesv1alpha1.ConditionPurchaseAPIReady, api},
		{salesv1alpha1.ConditionInventorySeeded, seeded},
		{salesv1alpha1.ConditionReady, ready},
		{salesv1alpha1.ConditionHibernated, hibernated},
		{salesv1alpha1.ConditionStatusStale, stale},
		{salesv1alpha1.ConditionDatastoreUpdatePending, update},
		{salesv1alpha1.ConditionWebhooksReady, webhooksCheck(obs.webhooks)},
	} {
		status := metav1.ConditionFalse
		if c.ready {
			status = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: c.typ, Status: status, Reason: c.reason, Message: c.detail, ObservedGeneration: sale.Generation,
		})
	}
	return st
}

// webhooksCheck is the WebhooksReady check, NoWebhooks when none was made
// (a status computed without a reconcile's resolution).
func webhooksCheck(c check) check {
	if c.reason == "" {
		return check{true, "NoWebhooks", "the sale has no webhooks"}
	}
	return c
}

// applyFailedMessage names every object that failed, within the length a
// condition message may have.
func applyFailedMessage(failures []error) string {
	const limit = 4096
	msg := errors.Join(failures...).Error()
	if len(msg) > limit {
		msg = msg[:limit-3] + "..."
	}
	return strings.ReplaceAll(msg, "\n", "; ")
}

// reportedInventory is the seeded inventory the purchase pods last
// reported (sold + held + available); ok is false before their first report.
func reportedInventory(sale *salesv1alpha1.FlashSale) (n int64, ok bool) {
	if st := sale.Status; st.Sold != nil && st.Available != nil {
		return *st.Sold + ptr.Deref(st.Held, 0) + *st.Available, true
	}
	return 0, false
}

func firstNotReady(checks ...check) string {
	for _, c := range checks {
		if !c.ready {
			return c.detail
		}
	}
	return ""
}

// provisioned says whether the sale's workloads have all been ready once:
// every phase but Provisioning is written only after that, and a sale
// never goes back to Provisioning. Not the Ready condition: it is False
// (ApplyFailed) while any object fails to apply, on a sale that runs.
func provisioned(sale *salesv1alpha1.FlashSale) bool {
	switch sale.Status.Phase {
	case "", salesv1alpha1.PhaseProvisioning:
		return false
	}
	return true
}

// phase: Provisioning until everything is ready once, Degraded when it
// stops being ready, then the clock, the kill switch and the counts.
func phase(sale *salesv1alpha1.FlashSale, ready, wasReady bool, now time.Time) salesv1alpha1.Phase {
	switch s := sale.Spec; {
	case !ready && wasReady:
		return salesv1alpha1.PhaseDegraded
	case !ready:
		return salesv1alpha1.PhaseProvisioning
	case s.EndsAt != nil && !now.Before(s.EndsAt.Time):
		return salesv1alpha1.PhaseEnded
	case s.Paused:
		return salesv1alpha1.PhasePaused
	case s.StartsAt != nil && now.Before(s.StartsAt.Time):
		return salesv1alpha1.PhaseScheduled
	case reportedSoldOut(sale):
		return salesv1alpha1.PhaseSoldOut
	}
	return salesv1alpha1.PhaseOnSale
}

// nextBoundary is how long until the phase or hibernation changes by the
// clock alone (startsAt, endsAt, a sold-out sale's hibernation); zero when
// no such moment is ahead.
func nextBoundary(sale *salesv1alpha1.FlashSale, now time.Time) time.Duration {
	var next time.Duration
	consider := func(t time.Time) {
		if d := t.Sub(now); d > 0 && (next == 0 || d < next) {
			next = d
		}
	}
	for _, t := range []*metav1.Time{sale.Spec.StartsAt, sale.Spec.EndsAt} {
		if t != nil {
			consider(t.Time)
		}
	}
	if at, ok := hibernatesAt(sale); ok {
		consider(at)
	}
	if at, ok := staleAt(sale); ok {
		consider(at)
	}
	return next
}

// StatusStaleAfter is how long a provisioned sale may go without a report
// from its purchase pods (they report every second) before StatusStale.
const StatusStaleAfter = 30 * time.Second

// staleAt is when the sale's status turns stale without a new report:
// StatusStaleAfter after the last report, or after the purchase pods (the
// reporters) or the whole sale last became ready, whichever is latest.
// false before the sale is provisioned or while no purchase pod is ready
// (no report expected). Not gated on Ready: an object that fails to apply
// makes it False (ApplyFailed) while the pods sell and should report.
func staleAt(sale *salesv1alpha1.FlashSale) (time.Time, bool) {
	api := meta.FindStatusCondition(sale.Status.Conditions, salesv1alpha1.ConditionPurchaseAPIReady)
	if !provisioned(sale) || api == nil || api.Status != metav1.ConditionTrue {
		return time.Time{}, false
	}
	from := api.LastTransitionTime.Time
	if ready := meta.FindStatusCondition(sale.Status.Conditions, salesv1alpha1.ConditionReady); ready != nil &&
		ready.Status == metav1.ConditionTrue && ready.LastTransitionTime.After(from) {
		from = ready.LastTransitionTime.Time
	}
	if r := sale.Status.LastReportTime; r != nil && r.After(from) {
		from = r.Time
	}
	return from.Add(StatusStaleAfter), true
}
