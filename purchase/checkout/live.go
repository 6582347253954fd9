package checkout

import (
	"context"
	"fmt"
	"time"

	"github.com/flux-order/flux-order/purchase/sale"
)

// The values a running pod changes without a restart (the wiring package
// follows the FlashSale and calls these).

// SetSchedule changes the window and the pause switch at once, for every
// request that starts afterwards.
func (s *Service) SetSchedule(sch sale.Schedule) { s.schedule.Store(&sch) }

// Schedule is the window and pause switch in force now.
func (s *Service) Schedule() sale.Schedule { return *s.schedule.Load() }

// SetMaxPerBuyer changes the buyer limit for purchases that start
// afterwards (0: unlimited). Postgres enforces it per buyer row, so a lower
// limit refuses buyers who already hold that many; it never undoes orders.
func (s *Service) SetMaxPerBuyer(n int) { s.maxPerBuyer.Store(int64(n)) }

// MaxPerBuyer is the buyer limit in force (0: unlimited).
func (s *Service) MaxPerBuyer() int { return int(s.maxPerBuyer.Load()) }

// SetLockTTL changes the expiry of seat locks taken from now on, and how
// long the pod remembers a seat it saw held (a fraction of it).
func (s *Service) SetLockTTL(d time.Duration) {
	s.locks.SetTTL(d)
	s.held.setWindow(heldMemory(d))
}

// SetHoldTTL changes the life of holds placed from now on (0: holds off;
// holds already placed keep their expiry and can still be confirmed).
func (s *Service) SetHoldTTL(d time.Duration) { s.holdTTL.Store(int64(d)) }

// HoldTTL is the life of a hold placed now; 0 when holds are off.
func (s *Service) HoldTTL() time.Duration { return time.Duration(s.holdTTL.Load()) }

// SetSoldOut records the status' word that every seat is sold (answered
// without I/O until the inventory grows past it).
// A status still saying sold out right after a cancellation is stale (the
// reporter has not counted the seat back yet): ignored for
// CancelReapplyWindow.
func (s *Service) SetSoldOut(soldOut bool, tickets int64) {
	s.soldOut.Store(soldOut && tickets <= s.tickets.Load() && !s.recentlyCancelled())
}

// Tickets is the inventory this pod sells: seats 1..Tickets.
func (s *Service) Tickets() int64 { return s.tickets.Load() }

// Grow makes seats up to tickets exist in Postgres (idempotent, under the
// seeding advisory lock, whichever pod gets there first) and only then
// accepts them here, so a seat is never offered before its row exists. It
// never shrinks the range.
func (s *Service) Grow(ctx context.Context, tickets int64) error {
	if tickets <= s.tickets.Load() {
		return nil
	}
	if err := s.store.Seed(ctx, tickets); err != nil {
		return fmt.Errorf("seed %d tickets: %w", tickets, err)
	}
	for {
		cur := s.tickets.Load()
		if tickets <= cur || s.tickets.CompareAndSwap(cur, tickets) {
			return nil
		}
	}
}

// LockTTL is the expiry of seat locks taken now.
func (s *Service) LockTTL() time.Duration { return s.locks.TTL() }
