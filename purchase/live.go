package purchase

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/client/config"

	"github.com/flux-order/flux-order/purchase/orderstore"
	"github.com/flux-order/flux-order/purchase/statusreport"
)

// The values a running pod changes without a restart. In a cluster they
// come from the pod's FlashSale (read at start, then followed): none of them
// is in the pod template, so pausing, moving the window, changing the buyer
// limit or the lock expiry, or adding seats never rolls the pods. Outside
// Kubernetes the flags set them once.

// withSettings is cfg with the live values of its FlashSale.
func (cfg Config) withSettings(s statusreport.Settings) Config {
	cfg.Tickets = s.Tickets
	cfg.Schedule = Schedule{Paused: s.Paused, StartsAt: s.StartsAt, EndsAt: s.EndsAt}
	cfg.MaxPerBuyer = s.MaxTicketsPerBuyer
	cfg.DisplayName = s.DisplayName
	cfg.WaitingRoom = waitingRoomOf(s.WaitingRoom)
	if s.LockTTL > 0 {
		cfg.LockTTL = s.LockTTL
	}
	cfg.HoldTTL = s.HoldTTL
	return cfg
}

// settingsFromFlashSale reads the pod's FlashSale once, at start, so the
// first request is already answered with its current settings.
func settingsFromFlashSale(ctx context.Context, cfg Config, log *slog.Logger) (Config, error) {
	rc, err := ctrlconfig.GetConfig()
	if err != nil {
		return cfg, fmt.Errorf("--report-status needs access to the Kubernetes API: %w", err)
	}
	r, err := statusreport.New(rc, cfg.Namespace, cfg.Sale, "", nil, log)
	if err != nil {
		return cfg, err
	}
	s, err := r.Get(ctx)
	if err != nil {
		return cfg, err
	}
	cfg = cfg.withSettings(s)
	return cfg, cfg.Validate()
}

// SetMaxPerBuyer changes the buyer limit for purchases that start
// afterwards (0: unlimited). Postgres enforces it per buyer row, so a lower
// limit refuses buyers who already hold that many; it never undoes orders.
func (s *Service) SetMaxPerBuyer(n int) { s.maxPerBuyer.Store(int64(n)) }

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

// apply takes a new version of the FlashSale's settings. It never blocks:
// growth is handed to the goroutine of followGrowth.
func (s *Service) apply(st statusreport.Settings, grow chan int64) {
	s.SetSchedule(Schedule{Paused: st.Paused, StartsAt: st.StartsAt, EndsAt: st.EndsAt})
	s.SetMaxPerBuyer(st.MaxTicketsPerBuyer)
	s.SetDisplayName(st.DisplayName)
	s.SetWaitingRoom(waitingRoomOf(st.WaitingRoom))
	s.soldOut.Store(st.SoldOut && st.Tickets <= s.tickets.Load())
	if st.LockTTL > 0 {
		s.SetLockTTL(st.LockTTL)
	}
	s.SetHoldTTL(st.HoldTTL)
	if st.Tickets > s.tickets.Load() {
		select { // keep only the latest wish
		case <-grow:
		default:
		}
		grow <- st.Tickets
	}
}

// followGrowth seeds each inventory increase it receives, retrying a failed
// seeding (the database may be briefly down) until it succeeds or a newer
// increase replaces it. A smaller inventory than the seeded one cannot
// happen through the API (it refuses shrinking) and is logged, never applied.
func (s *Service) followGrowth(ctx context.Context, grow <-chan int64) {
	for {
		var want int64
		select {
		case <-ctx.Done():
			return
		case want = <-grow:
		}
		for attempt := 1; ; attempt++ {
			err := s.Grow(ctx, want)
			if err == nil {
				s.log.Info("inventory grown", "tickets", s.Tickets())
				break
			}
			if errors.Is(err, orderstore.ErrShrink) {
				s.log.Error("the FlashSale asks for fewer seats than the database holds; keeping the database's", "err", err)
				break
			}
			s.log.Warn("seeding the new seats failed; retrying", "attempt", attempt, "err", err)
			select {
			case <-ctx.Done():
				return
			case want = <-grow:
			case <-time.After(min(time.Duration(attempt)*time.Second, 5*time.Second)):
			}
		}
	}
}

// waitingRoomOf is the FlashSale's spec.waitingRoom as the pod's settings.
func waitingRoomOf(w statusreport.WaitingRoom) WaitingRoom {
	order := QueueFIFO
	if w.Order == "Random" {
		order = QueueRandom
	}
	return WaitingRoom{AdmitPerSecond: w.AdmitPerSecond, MaxActiveBuyers: w.MaxActiveBuyers,
		Order: order, JoinFrom: w.JoinFrom, PassTTL: w.PassTTL}
}
