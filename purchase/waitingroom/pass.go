package waitingroom

import (
	"strings"
	"time"

	"github.com/flux-order/flux-order/purchase/sale"
)

// CheckPass says whether a request whose Authorization header values are
// authorization may buy or hold for buyerID. With the room on, it needs
// `Bearer <pass>` signed for that buyer and not expired; with it off,
// everyone may. Purchases and holds call it once the buyer is known, before
// any I/O: the pass is checked from its signature alone.
func (q *Room) CheckPass(authorization []string, buyerID string) error {
	if !q.settings.Load().On() {
		return nil
	}
	if len(authorization) == 0 {
		return sale.ErrPassRequired
	}
	scheme, token, ok := strings.Cut(authorization[0], " ")
	if len(authorization) > 1 {
		return sale.ErrPassInvalid
	}
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return sale.ErrPassRequired
	}
	return q.checkPass(token, buyerID)
}

// CheckPassHeader is CheckPass for a sale with buyer identity, where
// Authorization carries the identity token and the pass comes alone in
// its own header (Flux-Order-Pass): values are that header's.
func (q *Room) CheckPassHeader(values []string, buyerID string) error {
	if !q.settings.Load().On() {
		return nil
	}
	switch len(values) {
	case 0:
		return sale.ErrPassRequired
	case 1:
		return q.checkPass(values[0], buyerID)
	}
	return sale.ErrPassInvalid
}

func (q *Room) checkPass(token, buyerID string) error {
	expires, err := q.signer.checkPass(strings.TrimSpace(token), buyerID, time.Now())
	if err != nil || q.left.passVoid(buyerID, expires, q.settings.Load().passTTL()) {
		return sale.ErrPassInvalid // forged, expired, another buyer's, or given up (Leave)
	}
	return nil
}
