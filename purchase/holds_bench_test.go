package purchase_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flux-order/flux-order/purchase/checkout"
	"github.com/flux-order/flux-order/purchase/sale"
)

// BenchmarkHold_OnHeldSeat is a storm of holds on a seat under another
// buyer's hold: refused from the pod's 20 ms memory or one Redis round
// trip, never the database.
func BenchmarkHold_OnHeldSeat(b *testing.B) {
	s := newTestSale(b, 10, withHolds(time.Hour))
	svc := s.Pods[0].Svc
	if _, _, err := svc.Checkout.PlaceHold(context.Background(), checkout.HoldRequest{TicketID: 1, BuyerID: "holder"}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := svc.Checkout.PlaceHold(context.Background(), checkout.HoldRequest{TicketID: 1, BuyerID: "b"}); !errors.Is(err, sale.ErrTicketHeld) {
				b.Fatalf("want ticket_held, got %v", err)
			}
		}
	})
}

// BenchmarkHold_PlaceAndConfirm is a winning checkout without the think
// time: hold (Redis, hold_seat), then confirm (confirm_hold, sold marker);
// every iteration a fresh seat.
func BenchmarkHold_PlaceAndConfirm(b *testing.B) {
	s := newTestSale(b, int64(b.N)+1, withHolds(time.Hour))
	svc := s.Pods[0].Svc
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := next.Add(1)
			buyer := fmt.Sprint("b", id)
			h, _, err := svc.Checkout.PlaceHold(context.Background(), checkout.HoldRequest{TicketID: id, BuyerID: buyer})
			if err != nil {
				b.Fatalf("hold %d: %v", id, err)
			}
			if _, _, err := svc.Checkout.ConfirmHold(context.Background(), h.ID, buyer, "pay"); err != nil {
				b.Fatalf("confirm %d: %v", id, err)
			}
		}
	})
}
