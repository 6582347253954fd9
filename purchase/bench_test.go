package purchase_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/flux-order/flux-order/purchase/checkout"
	"github.com/flux-order/flux-order/purchase/sale"
)

// Benchmarks run against the same real servers as the tests (Postgres with
// fsync off: they measure the service's own cost, not the disk). Record
// results in docs/benchmarks.md with the command that produced them.

// BenchmarkPurchase_HotSeatHeld is the fail-fast path: the seat is locked
// by another buyer. The first refusal asks Redis; for the held-seat
// memory's window (checkout.MaxHeldMemory, 20 ms) the pod answers from
// memory, so the pod asks Redis at most once per window per seat.
func BenchmarkPurchase_HotSeatHeld(b *testing.B) {
	s := newTestSale(b, 10)
	svc := s.Pods[0].Svc
	if _, err := s.Locks().Acquire(context.Background(), 1, "holder"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := svc.Checkout.Purchase(context.Background(), checkout.Request{TicketID: 1, BuyerID: "b"}); !errors.Is(err, sale.ErrTicketLocked) {
				b.Fatalf("want ticket_locked, got %v", err)
			}
		}
	})
}

// BenchmarkPurchase_HotSeatSold is the storm after the sale: the pod
// remembers the seat is sold and answers without any I/O.
func BenchmarkPurchase_HotSeatSold(b *testing.B) {
	s := newTestSale(b, 10)
	svc := s.Pods[0].Svc
	if _, _, err := svc.Checkout.Purchase(context.Background(), checkout.Request{TicketID: 1, BuyerID: "winner"}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := svc.Checkout.Purchase(context.Background(), checkout.Request{TicketID: 1, BuyerID: "b"}); !errors.Is(err, sale.ErrTicketSold) {
				b.Fatalf("want ticket_sold, got %v", err)
			}
		}
	})
}

// BenchmarkPurchase_Confirm is the winning path: lock, Postgres
// transaction, sold marker; every iteration buys a fresh seat.
func BenchmarkPurchase_Confirm(b *testing.B) {
	s := newTestSale(b, int64(b.N)+1)
	svc := s.Pods[0].Svc
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := next.Add(1)
			if _, _, err := svc.Checkout.Purchase(context.Background(), checkout.Request{TicketID: id, BuyerID: fmt.Sprint("b", id)}); err != nil {
				b.Fatalf("seat %d: %v", id, err)
			}
		}
	})
}

// BenchmarkHTTP_HotSeatSold is BenchmarkPurchase_HotSeatSold through the
// HTTP handler and a real loopback connection.
func BenchmarkHTTP_HotSeatSold(b *testing.B) {
	s := newTestSale(b, 10)
	if a := s.Buy(1, "winner"); a.Status != 201 {
		b.Fatal(a.Code)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if a := s.Buy(1, "b"); a.Code != "ticket_sold" {
				b.Fatalf("want ticket_sold, got %d %s", a.Status, a.Code)
			}
		}
	})
}
