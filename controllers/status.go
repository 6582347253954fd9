package controllers

import (
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/controllers/specs"
)

// observed is what the reconciler saw of the owned workloads; nil means the
// object does not exist (yet). External dependencies count as ready.
type observed struct {
	redis    *appsv1.Deployment
	postgres *appsv1.StatefulSet
	purchase *appsv1.Deployment
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

// computeStatus derives every operator-owned status field from the sale,
// what was observed and the clock. It keeps the pods' fields (sold,
// available, lastReportTime) as they are: they are not the operator's.
func computeStatus(sale *salesv1alpha1.FlashSale, obs observed, now time.Time) salesv1alpha1.FlashSaleStatus {
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
	redis := workloadCheck(sale.Spec.Redis.External != nil, obs.redis != nil, redisReady, "Redis")
	pg := workloadCheck(sale.Spec.Postgres.External != nil, obs.postgres != nil, pgReady, "PostgreSQL")
	api := workloadCheck(false, obs.purchase != nil, purchaseReady, "the purchase API")

	// A purchase pod becomes ready only after migrating and seeding its
	// inventory; the pods' report tells whether the database holds every
	// seat of the spec (sold + available = seeded seats).
	seeded := check{false, "WaitingForPurchaseAPI", "no purchase pod has seeded the inventory yet"}
	if api.ready {
		seeded = check{true, "Seeded", "the inventory is seeded"}
		if prev.Sold != nil && prev.Available != nil && *prev.Sold+*prev.Available < sale.Spec.Tickets {
			seeded = check{false, "Growing", "the purchase pods have not seeded the new tickets yet"}
		}
	}
	all := redis.ready && pg.ready && api.ready && seeded.ready
	wasReady := meta.IsStatusConditionTrue(prev.Conditions, salesv1alpha1.ConditionReady) || prev.Phase == salesv1alpha1.PhaseDegraded

	st.Phase = phase(sale, all, wasReady, now)
	ready := check{true, string(st.Phase), "the sale is provisioned"}
	if !all {
		ready = check{false, string(st.Phase), "waiting for " + firstNotReady(redis, pg, api, seeded)}
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

func firstNotReady(checks ...check) string {
	for _, c := range checks {
		if !c.ready {
			return c.detail
		}
	}
	return ""
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
	case sale.Status.Available != nil && *sale.Status.Available == 0 && sale.Status.Sold != nil && *sale.Status.Sold >= s.Tickets:
		return salesv1alpha1.PhaseSoldOut
	}
	return salesv1alpha1.PhaseOnSale
}

// nextBoundary is how long until the phase flips by the clock alone
// (startsAt, endsAt); zero when no such moment is ahead.
func nextBoundary(sale *salesv1alpha1.FlashSale, now time.Time) time.Duration {
	for _, t := range []*metav1.Time{sale.Spec.StartsAt, sale.Spec.EndsAt} {
		if t != nil && t.After(now) {
			return t.Sub(now)
		}
	}
	return 0
}
