package httpapi

import (
	"fmt"
	"net/http"

	"github.com/flux-order/flux-order/purchase/sale"
)

// PassHeader carries the waiting room's pass when buyer identity is on and
// Authorization carries the identity token. Without identity the pass is
// still accepted as Authorization: Bearer <pass>.
const PassHeader = "Flux-Order-Pass"

// buyer is who a request acts for.
type buyer struct {
	id string
	// identified: the id is the identity token's subject (identity is on),
	// so the pass comes in PassHeader.
	identified bool
}

// identityOn says whether this request must carry an identity token.
func (s *API) identityOn() bool { return s.identity != nil && s.identity.On() }

// subject verifies the request's identity token and returns its subject,
// which must be a buyer id as a body's would be (normalized, visible).
func (s *API) subject(r *http.Request) (string, error) {
	sub, err := s.identity.Subject(r.Header["Authorization"])
	if err != nil {
		return "", err
	}
	if id, err := normalizeBuyerID(sub); err != nil || id != sub {
		return "", fmt.Errorf("%w: the token's sub is not a usable buyer id", sale.ErrAuthInvalid)
	}
	return sub, nil
}

// buyerOf decides a purchase's, hold's or join's buyer. Without identity
// it is the body's buyerId. With identity it is the token's subject: the
// body may be empty, or name the same buyer; another buyerId is refused
// (buyer_mismatch), and so is a request without a valid token
// (auth_required, auth_invalid), before the body is looked at.
func (s *API) buyerOf(r *http.Request, body []byte) (buyer, error) {
	if !s.identityOn() {
		id, err := decodePurchase(body)
		return buyer{id: id}, err
	}
	sub, err := s.subject(r)
	if err != nil {
		return buyer{}, err
	}
	if len(body) > 0 {
		id, err := decodePurchase(body)
		if err != nil {
			return buyer{}, err
		}
		if id != sub {
			return buyer{}, sale.ErrBuyerMismatch
		}
	}
	return buyer{id: sub, identified: true}, nil
}

// checkPass asks the waiting room whether b may buy or hold now: the pass
// in PassHeader when b is identified, else in Authorization.
func (s *API) checkPass(r *http.Request, b buyer) error {
	if b.identified {
		return s.queue.CheckPassHeader(r.Header[PassHeader], b.id)
	}
	return s.queue.CheckPass(r.Header["Authorization"], b.id)
}

// owner checks, with identity on, that the request's subject is owner (an
// order's or a hold's buyer): another buyer's order or hold answers as if
// it did not exist (notFound). Without identity the id is the capability
// and anyone holding it may read it.
func (s *API) owner(r *http.Request, owner string, notFound error) error {
	if !s.identityOn() {
		return nil
	}
	sub, err := s.subject(r)
	if err != nil {
		return err
	}
	if sub != owner {
		return notFound
	}
	return nil
}

// authenticate, with identity on, refuses a request without a valid token
// before any I/O (a lookup of an order or hold then checks its owner).
func (s *API) authenticate(r *http.Request) error {
	if !s.identityOn() {
		return nil
	}
	_, err := s.subject(r)
	return err
}
