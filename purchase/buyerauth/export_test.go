package buyerauth

import "time"

// SetNow sets the verifier's clock (tests).
func (v *Verifier) SetNow(now func() time.Time) { v.now = now }
