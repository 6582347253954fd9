package statusreport

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
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
	// WaitingRoom is spec.waitingRoom; its AdmitPerSecond is 0 when absent.
	WaitingRoom WaitingRoom
}

// WaitingRoom is spec.waitingRoom, as the API server defaulted it.
type WaitingRoom struct {
	AdmitPerSecond  int
	MaxActiveBuyers int
	Order           string // FIFO or Random
	JoinFrom        time.Time
	PassTTL         time.Duration
}

// Get reads this sale's settings once.
func (r *Reporter) Get(ctx context.Context) (Settings, error) {
	u, err := r.dyn.Resource(flashSales).Namespace(r.Namespace).Get(ctx, r.Sale, metav1.GetOptions{})
	if err != nil {
		return Settings{}, fmt.Errorf("read FlashSale %s/%s: %w", r.Namespace, r.Sale, err)
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
		if last == nil || *last != s {
			last = &s
			r.Log.Info("sale settings", "paused", s.Paused, "startsAt", s.StartsAt, "endsAt", s.EndsAt,
				"maxTicketsPerBuyer", s.MaxTicketsPerBuyer, "lockTTL", s.LockTTL, "holdTTL", s.HoldTTL, "tickets", s.Tickets,
				"waitingRoom", s.WaitingRoom)
			onChange(s)
		}
	}
	_, _ = inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    apply,
		UpdateFunc: func(_, obj any) { apply(obj) },
	})
	inf.Informer().Run(ctx.Done())
}

// settingsOf reads the settings from a FlashSale. The API server has
// validated and defaulted them (lockTTL 5s), so an error here means a
// FlashSale of another version than this pod knows.
func settingsOf(u *unstructured.Unstructured) (Settings, error) {
	var s Settings
	spec := func(f string) []string { return []string{"spec", f} }
	s.Paused, _, _ = unstructured.NestedBool(u.Object, spec("paused")...)
	s.DisplayName, _, _ = unstructured.NestedString(u.Object, spec("displayName")...)
	for field, dst := range map[string]*time.Time{"startsAt": &s.StartsAt, "endsAt": &s.EndsAt} {
		if v, ok, _ := unstructured.NestedString(u.Object, spec(field)...); ok {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return Settings{}, fmt.Errorf("spec.%s: %w", field, err)
			}
			*dst = t
		}
	}
	limit, _, _ := unstructured.NestedInt64(u.Object, spec("maxTicketsPerBuyer")...)
	s.MaxTicketsPerBuyer = int(limit)
	s.Tickets, _, _ = unstructured.NestedInt64(u.Object, spec("tickets")...)
	if s.Tickets < 1 {
		return Settings{}, fmt.Errorf("spec.tickets is %d", s.Tickets)
	}
	sold, okSold, _ := unstructured.NestedInt64(u.Object, "status", "sold")
	available, okAvailable, _ := unstructured.NestedInt64(u.Object, "status", "available")
	s.SoldOut = okSold && okAvailable && available == 0 && sold >= s.Tickets
	for field, dst := range map[string]*time.Duration{"lockTTL": &s.LockTTL, "holdTTL": &s.HoldTTL} {
		if v, ok, _ := unstructured.NestedString(u.Object, spec(field)...); ok {
			d, err := time.ParseDuration(v)
			if err != nil {
				return Settings{}, fmt.Errorf("spec.%s: %w", field, err)
			}
			*dst = d
		}
	}
	wr, err := waitingRoomOf(u)
	if err != nil {
		return Settings{}, err
	}
	s.WaitingRoom = wr
	return s, nil
}

func waitingRoomOf(u *unstructured.Unstructured) (WaitingRoom, error) {
	var w WaitingRoom
	m, ok, _ := unstructured.NestedMap(u.Object, "spec", "waitingRoom")
	if !ok {
		return w, nil
	}
	rate, _, _ := unstructured.NestedInt64(m, "admitPerSecond")
	active, _, _ := unstructured.NestedInt64(m, "maxActiveBuyers")
	w.AdmitPerSecond, w.MaxActiveBuyers = int(rate), int(active)
	w.Order, _, _ = unstructured.NestedString(m, "order")
	if v, ok, _ := unstructured.NestedString(m, "joinFrom"); ok {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return w, fmt.Errorf("spec.waitingRoom.joinFrom: %w", err)
		}
		w.JoinFrom = t
	}
	if v, ok, _ := unstructured.NestedString(m, "passTTL"); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			return w, fmt.Errorf("spec.waitingRoom.passTTL: %w", err)
		}
		w.PassTTL = d
	}
	return w, nil
}
