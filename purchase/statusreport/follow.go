package statusreport

import (
	"context"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
)

// Schedule is the part of a FlashSale's spec the pods apply live: the kill
// switch and the window. Rolling the pods would take a while; a watch
// takes effect on the next request.
type Schedule struct {
	Paused           bool
	StartsAt, EndsAt time.Time // zero when unset
}

// Follow watches this sale's FlashSale (only it: the pods' Role names it)
// and calls onChange with its schedule whenever it changes, until ctx ends.
func (r *Reporter) Follow(ctx context.Context, onChange func(Schedule)) {
	inf := dynamicinformer.NewFilteredDynamicInformer(r.dyn, flashSales, r.Namespace, 0, cache.Indexers{},
		func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", r.Sale).String()
		})
	var last *Schedule
	apply := func(obj any) {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			return
		}
		s := scheduleOf(u)
		if last == nil || *last != s {
			last = &s
			r.Log.Info("sale schedule", "paused", s.Paused, "startsAt", s.StartsAt, "endsAt", s.EndsAt)
			onChange(s)
		}
	}
	_, _ = inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    apply,
		UpdateFunc: func(_, obj any) { apply(obj) },
	})
	inf.Informer().Run(ctx.Done())
}

func scheduleOf(u *unstructured.Unstructured) Schedule {
	var s Schedule
	s.Paused, _, _ = unstructured.NestedBool(u.Object, "spec", "paused")
	for field, dst := range map[string]*time.Time{"startsAt": &s.StartsAt, "endsAt": &s.EndsAt} {
		if v, ok, _ := unstructured.NestedString(u.Object, "spec", field); ok {
			if t, err := time.Parse(time.RFC3339, v); err == nil {
				*dst = t
			}
		}
	}
	return s
}
