package controllers

import (
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

// boundaries wakes a sale at its next clock boundary (startsAt, endsAt,
// hibernation) after a failed reconcile. A reconcile that returns an error
// is retried with backoff, which replaces its RequeueAfter and grows to
// minutes; the phases the clock drives must not wait for it.
type boundaries struct {
	events chan event.TypedGenericEvent[*salesv1alpha1.FlashSale]
	mu     sync.Mutex
	due    map[types.NamespacedName]time.Time
}

func newBoundaries() *boundaries {
	return &boundaries{events: make(chan event.TypedGenericEvent[*salesv1alpha1.FlashSale], 64), due: map[types.NamespacedName]time.Time{}}
}

// after enqueues the sale once d has passed, unless a wake-up is already
// due by then.
func (b *boundaries) after(sale *salesv1alpha1.FlashSale, d time.Duration) {
	key := types.NamespacedName{Namespace: sale.Namespace, Name: sale.Name}
	at := time.Now().Add(d)
	b.mu.Lock()
	if t, ok := b.due[key]; ok && !t.After(at) {
		b.mu.Unlock()
		return
	}
	b.due[key] = at
	b.mu.Unlock()
	obj := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
	time.AfterFunc(d, func() {
		b.mu.Lock()
		if b.due[key].Equal(at) {
			delete(b.due, key)
		}
		b.mu.Unlock()
		b.events <- event.TypedGenericEvent[*salesv1alpha1.FlashSale]{Object: obj}
	})
}
