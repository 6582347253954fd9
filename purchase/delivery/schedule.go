package delivery

import (
	"math/rand/v2"
	"time"
)

// Schedule is the retry schedule of a delivery, in units of Unit (1s in
// production; 1ms in tests: --webhook-retry-unit). After the n-th failed
// attempt the next one waits min(2^(n-1), Cap) units, ±20% jitter, until
// the attempts' waits add up to Period; then the event is dead.
//
// The defaults (1 s, doubling up to 1 h, for 24 h): retries at about 1 s,
// 2 s, 4 s, ... 34 min, then hourly: 36 attempts in all.
type Schedule struct {
	Unit   time.Duration
	Cap    int64 // units
	Period int64 // units
}

// DefaultSchedule retries for 24 hours.
func DefaultSchedule(unit time.Duration) Schedule {
	return Schedule{Unit: unit, Cap: 3600, Period: 24 * 3600}
}

// base is the wait after the n-th failure, in units, without jitter.
func (s Schedule) base(n int) int64 {
	if n > 62 {
		return s.Cap
	}
	return min(int64(1)<<(n-1), s.Cap)
}

// Attempts is the number of attempts before an event is dead: the first,
// and one after each wait until the waits cover Period.
func (s Schedule) Attempts() int {
	var total int64
	n := 1
	for total < s.Period {
		total += s.base(n)
		n++
	}
	return n
}

// Wait is the wait after the n-th failed attempt (n ≥ 1), jittered.
func (s Schedule) Wait(n int) time.Duration {
	d := time.Duration(s.base(n)) * s.Unit
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}
