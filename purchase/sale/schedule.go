package sale

import "time"

// Schedule is the sale's window and its pause switch: the one place its
// rules are written. Checkout, the waiting room and the page all ask it.
type Schedule struct {
	StartsAt time.Time // zero: open from the start
	EndsAt   time.Time // zero: never ends
	Paused   bool
}

// Check says whether purchases are allowed at now, from local state only.
func (s Schedule) Check(now time.Time) error {
	switch {
	case s.Paused:
		return ErrSalePaused
	case s.Before(now):
		return ErrSaleNotStarted
	case s.Ended(now):
		return ErrSaleEnded
	}
	return nil
}

// Before says whether now is before the start.
func (s Schedule) Before(now time.Time) bool { return !s.StartsAt.IsZero() && now.Before(s.StartsAt) }

// Ended says whether the window has closed at now.
func (s Schedule) Ended(now time.Time) bool { return !s.EndsAt.IsZero() && !now.Before(s.EndsAt) }

// UntilStart is the time left before the start at now (0 once started).
func (s Schedule) UntilStart(now time.Time) time.Duration {
	if !s.Before(now) {
		return 0
	}
	return s.StartsAt.Sub(now)
}
