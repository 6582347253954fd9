package controllers

import (
	"time"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

// defaultHibernateAfter is spec.hibernateAfter's default (the CRD's too).
const defaultHibernateAfter = 15 * time.Minute

// hibernation says whether the sale hibernates at now, and why: it has
// Ended, or it has been SoldOut for spec.hibernateAfter. It depends only on
// the spec, the pods' counts and the clock, never on readiness (a
// hibernating sale's Redis is scaled to 0 on purpose). Extending endsAt or
// adding tickets makes it false again: the sale wakes up.
func hibernation(sale *salesv1alpha1.FlashSale, now time.Time) (bool, string) {
	if e := sale.Spec.EndsAt; e != nil && !now.Before(e.Time) {
		return true, string(salesv1alpha1.PhaseEnded)
	}
	if at, ok := hibernatesAt(sale); ok && !now.Before(at) {
		return true, string(salesv1alpha1.PhaseSoldOut)
	}
	return false, ""
}

// hibernatesAt is when a sold-out sale hibernates; ok is false when the
// sale is not sold out.
func hibernatesAt(sale *salesv1alpha1.FlashSale) (time.Time, bool) {
	since := sale.Status.SoldOutSince
	if !reportedSoldOut(sale) || since == nil {
		return time.Time{}, false
	}
	after := defaultHibernateAfter
	if h := sale.Spec.HibernateAfter; h != nil {
		after = h.Duration
	}
	return since.Add(after), true
}

// reportedSoldOut: the pods report no seat available out of the spec's
// whole inventory (after growth the new seats are not sold yet).
func reportedSoldOut(sale *salesv1alpha1.FlashSale) bool {
	st := sale.Status
	return st.Available != nil && *st.Available == 0 && st.Sold != nil && *st.Sold >= sale.Spec.Tickets
}
