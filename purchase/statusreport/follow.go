package statusreport

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

// Settings is the part of a FlashSale the pods apply live: from its spec the
// kill switch, the window, the buyer limit, the lock expiry and the
// inventory, the hold expiry; from its status whether it is sold out.
// None of them is in the pod template, so changing one never rolls the
// pods: a pod reads them when it starts (Get) and follows them (Follow).
type Settings struct {
	Paused             bool
	StartsAt, EndsAt   time.Time // zero when unset
	MaxTicketsPerBuyer int       // 0: unlimited
	LockTTL            time.Duration
	HoldTTL            time.Duration // 0: holds off
	Tickets            int64
	// SoldOut: the status reports every seat of Tickets sold (the pods'
	// own report, so at most a second old). Sold seats stay sold, so it
	// only turns false when Tickets grows.
	SoldOut bool
	// DisplayName is the event's name on the sale page ("": the sale's).
	DisplayName string
	// WaitingRoom is spec.waitingRoom, as the API server defaulted it; nil
	// while the sale has none (the waiting room is off).
	WaitingRoom *salesv1alpha1.WaitingRoomSpec
	// BuyerAuth is spec.buyerAuth: the pods take its issuer and audiences
	// live (the JWKS reaches them as a mounted file); nil: identity off.
	BuyerAuth *salesv1alpha1.BuyerAuthSpec
	// FrontDoor is spec.frontDoor, defaulted; nil while absent (the pods'
	// flags apply).
	FrontDoor *salesv1alpha1.FrontDoorSpec
}

// Get reads this sale's settings once.
func (r *Reporter) Get(ctx context.Context) (Settings, error) {
	u, err := r.dyn.Resource(flashSales).Namespace(r.Namespace).Get(ctx, r.Sale, metav1.GetOptions{})
	if err != nil {
		return Settings{}, fmt.Errorf("get flashsale %s/%s: %w", r.Namespace, r.Sale, err)
	}
	return settingsOf(u)
}

// Follow watches this sale's FlashSale (only it: the pods' Role names it)
// and calls onChange with its settings whenever they change, until ctx
// ends. Calls are serial; onChange must not block (a pause must never wait
// behind a slow seeding).
func (r *Reporter) Follow(ctx context.Context, onChange func(Settings)) {
	inf := dynamicinformer.NewFilteredDynamicInformer(r.dyn, flashSales, r.Namespace, 0, cache.Indexers{},
		func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", r.Sale).String()
		})
	var last *Settings
	apply := func(obj any) {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			return
		}
		s, err := settingsOf(u)
		if err != nil {
			r.Log.Warn("ignoring the FlashSale's settings", "err", err)
			return
		}
		if last == nil || !last.same(s) {
			last = &s
			r.Log.Info("sale settings", "paused", s.Paused, "startsAt", s.StartsAt, "endsAt", s.EndsAt,
				"maxTicketsPerBuyer", s.MaxTicketsPerBuyer, "lockTTL", s.LockTTL, "holdTTL", s.HoldTTL, "tickets", s.Tickets,
				"waitingRoom", s.WaitingRoom, "buyerAuth", s.BuyerAuth != nil)
			onChange(s)
		}
	}
	_, _ = inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    apply,
		UpdateFunc: func(_, obj any) { apply(obj) },
	})
	inf.Informer().Run(ctx.Done())
}

// same reports whether s and o are the same settings, their waiting rooms
// compared by value (joinFrom as an instant).
func (s Settings) same(o Settings) bool {
	ws, wo := s.WaitingRoom, o.WaitingRoom
	bs, bo := s.BuyerAuth, o.BuyerAuth
	fs, fo := s.FrontDoor, o.FrontDoor
	s.WaitingRoom, o.WaitingRoom, s.BuyerAuth, o.BuyerAuth, s.FrontDoor, o.FrontDoor = nil, nil, nil, nil, nil, nil
	return s == o && equality.Semantic.DeepEqual(ws, wo) && equality.Semantic.DeepEqual(bs, bo) && equality.Semantic.DeepEqual(fs, fo)
}

// settingsOf decodes a FlashSale and takes its settings. The API server has
// validated and defaulted them (lockTTL 5s), so an error here means a
// FlashSale of another version than this pod knows.
func settingsOf(u *unstructured.Unstructured) (Settings, error) {
	var sale salesv1alpha1.FlashSale
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &sale); err != nil {
		return Settings{}, fmt.Errorf("decode flashsale %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	spec, status := sale.Spec, sale.Status
	if spec.Tickets < 1 {
		return Settings{}, fmt.Errorf("spec.tickets is %d", spec.Tickets)
	}
	return Settings{
		Paused:             spec.Paused,
		StartsAt:           timeOf(spec.StartsAt),
		EndsAt:             timeOf(spec.EndsAt),
		MaxTicketsPerBuyer: int(spec.MaxTicketsPerBuyer),
		LockTTL:            durationOf(spec.LockTTL),
		HoldTTL:            durationOf(spec.HoldTTL),
		Tickets:            spec.Tickets,
		SoldOut:            status.Sold != nil && status.Available != nil && *status.Available == 0 && *status.Sold >= spec.Tickets,
		DisplayName:        spec.DisplayName,
		WaitingRoom:        spec.WaitingRoom,
		BuyerAuth:          spec.BuyerAuth,
		FrontDoor:          spec.FrontDoor,
	}, nil
}

// timeOf is t in UTC, the zero time when t is unset.
func timeOf(t *metav1.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// durationOf is d, 0 when d is unset.
func durationOf(d *metav1.Duration) time.Duration {
	if d == nil {
		return 0
	}
	return d.Duration
}
