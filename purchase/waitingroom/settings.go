package waitingroom

import (
	"time"

	"github.com/flux-order/flux-order/internal/flagerr"
)

// Settings are the waiting room's settings (live: from the FlashSale's
// spec.waitingRoom).
type Settings struct {
	AdmitPerSecond  int           // 0: no waiting room
	MaxActiveBuyers int           // 0: no cap beyond the inventory's
	Order           Order         // fifo (default) or random
	JoinFrom        time.Time     // zero: the queue is open from the start
	PassTTL         time.Duration // 0: DefaultPassTTL
	// ProofOfWork is the difficulty (leading zero bits of a SHA-256) of
	// the challenge a join must solve first (pow.go); 0: none.
	ProofOfWork int
}

// Order is the order in which a waiting room admits.
type Order string

// Queue orders: Random shuffles everyone who joined before startsAt, at
// startsAt; later arrivals queue behind them in arrival order.
const (
	FIFO   Order = "fifo"
	Random Order = "random"
)

// Bounds and default of a pass's life: shorter than a checkout is useless,
// longer keeps seats' worth of buyers "active" long after they left.
const (
	DefaultPassTTL = 10 * time.Minute
	MinPassTTL     = 30 * time.Second
	MaxPassTTL     = 24 * time.Hour
)

// On says whether buyers queue first.
func (w Settings) On() bool { return w.AdmitPerSecond > 0 }

func (w Settings) passTTL() time.Duration {
	if w.PassTTL == 0 {
		return DefaultPassTTL
	}
	return w.PassTTL
}

// Validate returns the first bad value as a *flagerr.Error naming its flag.
func (w Settings) Validate() error {
	bad := flagerr.New
	switch {
	case w.AdmitPerSecond < 0:
		return bad("admit-per-second", "must be 0 (no waiting room) or more, got %d", w.AdmitPerSecond)
	case w.MaxActiveBuyers < 0:
		return bad("max-active-buyers", "must be 0 (no cap) or more, got %d", w.MaxActiveBuyers)
	case w.Order != "" && w.Order != FIFO && w.Order != Random:
		return bad("queue-order", "must be fifo or random, got %q", w.Order)
	case w.ProofOfWork < 0 || w.ProofOfWork > MaxProofOfWork:
		return bad("proof-of-work", "must be between 0 (none) and %d bits, got %d", MaxProofOfWork, w.ProofOfWork)
	case w.PassTTL != 0 && (w.PassTTL < MinPassTTL || w.PassTTL > MaxPassTTL):
		return bad("pass-ttl", "must be between %v and %v, got %v", MinPassTTL, MaxPassTTL, w.PassTTL)
	}
	return nil
}
