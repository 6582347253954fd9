package purchase

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/client/config"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/purchase/buyerauth"
	"github.com/flux-order/flux-order/purchase/frontdoor"
	"github.com/flux-order/flux-order/purchase/orderstore"
	"github.com/flux-order/flux-order/purchase/sale"
	"github.com/flux-order/flux-order/purchase/statusreport"
	"github.com/flux-order/flux-order/purchase/waitingroom"
)

// The values a running pod changes without a restart. In a cluster they
// come from the pod's FlashSale (read at start, then followed): none of them
// is in the pod template, so pausing, moving the window, changing the buyer
// limit or the lock expiry, or adding seats never rolls the pods. Outside
// Kubernetes the flags set them once.

// withSettings is cfg with the live values of its FlashSale.
func (cfg Config) withSettings(s statusreport.Settings) Config {
	cfg.Tickets = s.Tickets
	cfg.Schedule = sale.Schedule{Paused: s.Paused, StartsAt: s.StartsAt, EndsAt: s.EndsAt}
	cfg.MaxPerBuyer = s.MaxTicketsPerBuyer
	cfg.DisplayName = s.DisplayName
	cfg.WaitingRoom = waitingRoomOf(s.WaitingRoom)
	cfg.BuyerAuth = buyerAuthOf(s.BuyerAuth)
	if cfg.flagsFrontDoor == nil {
		flags := cfg.FrontDoor
		cfg.flagsFrontDoor = &flags
	}
	cfg.FrontDoor = frontDoorOf(s.FrontDoor, *cfg.flagsFrontDoor)
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
		return cfg, fmt.Errorf("follow the flashsale: %w", err)
	}
	s, err := r.Get(ctx)
	if err != nil {
		return cfg, fmt.Errorf("read the flashsale's settings: %w", err)
	}
	cfg = cfg.withSettings(s)
	return cfg, cfg.Validate()
}

// Apply takes a new version of the FlashSale's settings. It never blocks:
// growth is handed to the goroutine of followGrowth (started by Run).
func (s *Service) Apply(st statusreport.Settings) {
	c := s.Checkout
	c.SetSchedule(sale.Schedule{Paused: st.Paused, StartsAt: st.StartsAt, EndsAt: st.EndsAt})
	c.SetMaxPerBuyer(st.MaxTicketsPerBuyer)
	s.SetDisplayName(st.DisplayName)
	s.Queue.Set(waitingRoomOf(st.WaitingRoom))
	s.Identity.Set(buyerAuthOf(st.BuyerAuth))
	flags := s.cfg.FrontDoor
	if s.cfg.flagsFrontDoor != nil {
		flags = *s.cfg.flagsFrontDoor
	}
	s.Door.Set(frontDoorOf(st.FrontDoor, flags))
	c.SetSoldOut(st.SoldOut, st.Tickets)
	if st.LockTTL > 0 {
		c.SetLockTTL(st.LockTTL)
	}
	c.SetHoldTTL(st.HoldTTL)
	if st.Tickets > c.Tickets() {
		select { // keep only the latest wish
		case <-s.grow:
		default:
		}
		s.grow <- st.Tickets
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
			err := s.Checkout.Grow(ctx, want)
			if err == nil {
				s.log.Info("inventory grown", "tickets", s.Checkout.Tickets())
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

// buyerAuthOf is the FlashSale's spec.buyerAuth as the pod's identity
// settings (nil: identity off). Its JWKS is not here: the pod reads it
// from the mounted file (Config.BuyerJWKSFile).
func buyerAuthOf(a *salesv1alpha1.BuyerAuthSpec) buyerauth.Settings {
	if a == nil {
		return buyerauth.Settings{}
	}
	return buyerauth.Settings{Issuer: a.JWT.Issuer, Audiences: a.JWT.Audiences}
}

// waitingRoomOf is the FlashSale's spec.waitingRoom as the pod's settings
// (nil: no waiting room).
func waitingRoomOf(w *salesv1alpha1.WaitingRoomSpec) waitingroom.Settings {
	if w == nil {
		return waitingroom.Settings{}
	}
	wr := waitingroom.Settings{AdmitPerSecond: int(w.AdmitPerSecond), MaxActiveBuyers: int(w.MaxActiveBuyers), Order: waitingroom.FIFO}
	if w.Order == salesv1alpha1.QueueRandom {
		wr.Order = waitingroom.Random
	}
	if w.JoinFrom != nil {
		wr.JoinFrom = w.JoinFrom.UTC()
	}
	if w.PassTTL != nil {
		wr.PassTTL = w.PassTTL.Duration
	}
	if w.ProofOfWork != nil {
		wr.ProofOfWork = int(w.ProofOfWork.Difficulty)
	}
	return wr
}

// frontDoorOf is the FlashSale's spec.frontDoor as the pod's settings; nil
// keeps flags (the pod's flags). The API server validated the CIDRs; one
// this pod cannot read is logged by the caller's Validate, never trusted.
func frontDoorOf(fd *salesv1alpha1.FrontDoorSpec, flags frontdoor.Settings) frontdoor.Settings {
	if fd == nil {
		return flags
	}
	out := frontdoor.Settings{}
	out.TrustedProxies, _ = frontdoor.ParsePrefixes(fd.TrustedProxies)
	if fd.MaxStreamsPerClient != nil {
		out.MaxStreamsPerClient = int(*fd.MaxStreamsPerClient)
	}
	if fd.JoinsPerClientPerMinute != nil {
		out.JoinsPerClientPerMinute = int(*fd.JoinsPerClientPerMinute)
	}
	return out
}
