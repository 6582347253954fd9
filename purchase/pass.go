package purchase

import (
	"net/http"
	"strings"
	"time"
)

// checkPass says whether a request may buy or hold for buyerID. With a
// waiting room on, it needs `Authorization: Bearer <pass>` signed for that
// buyer and not expired; without one, everyone may. Purchases and holds
// call it once the buyer is known, before any I/O: the pass is checked from
// its signature alone.
func (s *Service) checkPass(h http.Header, buyerID string) error {
	if !s.queue.settings.Load().on() {
		return nil
	}
	v := h["Authorization"]
	if len(v) == 0 {
		return ErrPassRequired
	}
	scheme, token, ok := strings.Cut(v[0], " ")
	if len(v) > 1 {
		return ErrPassInvalid
	}
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ErrPassRequired
	}
	if s.queue.signer.checkPass(strings.TrimSpace(token), buyerID, time.Now()) != nil {
		return ErrPassInvalid
	}
	return nil
}
