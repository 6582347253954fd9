package purchase_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/flux-order/flux-order/purchase/checkout"
	"github.com/flux-order/flux-order/purchase/purchasetest"
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

// BenchmarkCheckout_64Buyers sets a checkout (hold, then confirm) beside a
// one-step purchase, as make bench's checkout and sell-out rows do: 64
// buyers at once (RunParallel, 32 per core on the 2-core machine), a fresh
// seat each, on the durable PostgreSQL (fsync on, as a sale's). Besides
// ns/op (wall time per order over all buyers) it reports the pod's CPU per
// order (this process's getrusage: the pod without HTTP; PostgreSQL and
// Redis are other processes) and the members per group-commit statement of
// each kind, which set PostgreSQL's CPU per order (docs/purchase.md, "Group
// commit").
//
//	go test ./purchase -run '^$' -bench Checkout_64Buyers -benchtime 10000x -count 3
func BenchmarkCheckout_64Buyers(b *testing.B) {
	run := func(b *testing.B, order func(svc *checkout.Service, seat int64) error) {
		s := &testSale{purchasetest.NewSaleOn(b, purchasetest.Durable(b), int64(b.N)+1, withHolds(time.Hour))}
		svc := s.Pods[0].Svc.Checkout
		var next atomic.Int64
		b.ReportAllocs()
		b.SetParallelism(32)
		b.ResetTimer()
		cpu0 := processCPU(b)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := order(svc, next.Add(1)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.StopTimer()
		b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "pod-cpu-ns/order")
		for _, kind := range []string{"purchase", "hold", "confirm_hold"} {
			sum, count := batchSizes(b, s.Pods[0].PrivateURL, kind)
			if count > 0 {
				b.ReportMetric(sum/count, "members/"+kind+"-batch")
			}
		}
	}
	b.Run("purchase", func(b *testing.B) {
		run(b, func(svc *checkout.Service, seat int64) error {
			_, _, err := svc.Purchase(context.Background(), checkout.Request{TicketID: seat, BuyerID: fmt.Sprint("b", seat)})
			return err
		})
	})
	b.Run("checkout", func(b *testing.B) {
		run(b, func(svc *checkout.Service, seat int64) error {
			buyer := fmt.Sprint("b", seat)
			h, _, err := svc.PlaceHold(context.Background(), checkout.HoldRequest{TicketID: seat, BuyerID: buyer})
			if err != nil {
				return fmt.Errorf("hold %d: %w", seat, err)
			}
			if _, _, err := svc.ConfirmHold(context.Background(), h.ID, buyer, "pay"); err != nil {
				return fmt.Errorf("confirm %d: %w", seat, err)
			}
			return nil
		})
	})
}

// processCPU is this process's user + system CPU time in nanoseconds.
func processCPU(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// batchSizes reads flux_order_confirm_batch_size's _sum and _count of one
// kind from a pod's metrics.
func batchSizes(b *testing.B, privateURL, kind string) (sum, count float64) {
	resp, err := http.Get(privateURL + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), `{kind="`+kind+`"} `)
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			b.Fatal(err)
		}
		switch name {
		case "flux_order_confirm_batch_size_sum":
			sum = f
		case "flux_order_confirm_batch_size_count":
			count = f
		}
	}
	if err := sc.Err(); err != nil {
		b.Fatal(err)
	}
	return sum, count
}
