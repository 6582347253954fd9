package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/flux-order/flux-order/purchase/sale"
)

// The admin API (issue 19): the platform cancels an order whose payment
// failed, was refunded or charged back. It is served only on the pod's
// private port (the metrics listener: no Service routes the Ingress to it,
// and the NetworkPolicy opens it to the monitoring namespaces only; an
// operator reaches it with kubectl port-forward), and every request needs
// the sale's admin token (Authorization: Bearer <token>).

// Bounds of a cancellation's body.
const (
	MaxAdminBodyBytes = 4 << 10
	MaxReasonLen      = 500 // characters
	MaxCancelledByLen = 200 // characters
)

// The admin API's own answers.
var (
	errAdminDisabled     = errors.New("this pod has no admin token (--admin-token, FLUX_ORDER_ADMIN_TOKEN): the admin API is off")
	errAdminAuthRequired = errors.New("the admin API needs Authorization: Bearer <the sale's admin token>")
	errAdminAuthInvalid  = errors.New("the admin token is wrong")
)

// adminChallenge is the admin API's 401 challenge (RFC 6750 §3).
var adminChallenge = []string{`Bearer realm="flux-order admin"`}

// AdminHandler is the admin API, for the pod's private listener:
// POST /admin/v1/orders/{id}/cancel. Other /admin/ paths answer 404.
func (s *API) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/admin/v1/orders/{id}/cancel", s.handleCancel)
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { writeProblem(w, errNoSuchEndpoint) })
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p == "" || p[0] != '/' || !cleanPath(p) {
			writeProblem(w, errNoSuchEndpoint)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func cleanPath(p string) bool { return !strings.Contains(p, "//") && !strings.Contains(p, "/.") }

// checkAdmin refuses a request without the admin token, comparing in
// constant time (the hashes: their length is fixed, so neither the
// token's length nor its prefix leaks through the time taken).
func (s *API) checkAdmin(r *http.Request) error {
	if len(s.adminToken) == 0 {
		return errAdminDisabled
	}
	vs := r.Header["Authorization"]
	if len(vs) == 0 {
		return errAdminAuthRequired
	}
	tok, ok := strings.CutPrefix(vs[0], "Bearer ")
	if len(vs) != 1 || !ok {
		return errAdminAuthInvalid
	}
	got := sha256.Sum256([]byte(tok))
	if subtle.ConstantTimeCompare(got[:], s.adminToken) != 1 {
		return errAdminAuthInvalid
	}
	return nil
}

func (s *API) handleCancel(w http.ResponseWriter, r *http.Request) {
	s.metrics.observeAdmin(s.serveCancel(w, r))
}

func (s *API) serveCancel(w http.ResponseWriter, r *http.Request) string {
	fail := func(err error) string {
		if errors.Is(err, sale.ErrUnavailable) {
			s.logUnavailable(err)
		}
		writeProblem(w, err)
		return problemFor(err).code
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		return fail(errMethodNotAllowed)
	}
	if err := s.checkAdmin(r); err != nil {
		return fail(err)
	}
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		return fail(sale.ErrOrderNotFound)
	}
	body, err := readBodyUpTo(w, r, MaxAdminBodyBytes)
	if err != nil {
		return fail(err)
	}
	reason, by, err := decodeCancel(body)
	if err != nil {
		return fail(err)
	}
	c, first, err := s.checkout.Cancel(r.Context(), id, by, reason)
	if err != nil {
		return fail(err)
	}
	outcome := "cancelled"
	if !first {
		w.Header().Set(replayedHeader, "true")
		outcome = "replayed"
	}
	s.log.Info("order cancelled", "order", c.OrderID, "ticket", c.TicketID, "by", c.CancelledBy, "first", first)
	writeJSON(w, http.StatusOK, c)
	return outcome
}

// readBodyUpTo reads a request body of at most limit bytes.
func readBodyUpTo(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		return nil, fmt.Errorf("%w: body larger than %d bytes or unreadable", sale.ErrInvalidRequest, limit)
	}
	return body, nil
}

// decodeCancel reads {"reason": "...", "cancelledBy": "..."} strictly (the
// purchase API's decoder: exactly these members, strings, no duplicates).
// Each is 1..its bound characters of visible text (no control or format
// characters), without surrounding spaces: they go into the audit, the
// log and every webhook receiver.
func decodeCancel(body []byte) (reason, by string, err error) {
	v, err := parseStringObject(body, "reason", "cancelledBy")
	if err != nil {
		return "", "", fmt.Errorf("%w: body must be the JSON object {\"reason\": \"...\", \"cancelledBy\": \"...\"}: %v", sale.ErrInvalidRequest, err)
	}
	if err := checkText("reason", v[0], MaxReasonLen); err != nil {
		return "", "", err
	}
	if err := checkText("cancelledBy", v[1], MaxCancelledByLen); err != nil {
		return "", "", err
	}
	return v[0], v[1], nil
}

func checkText(name, v string, limit int) error {
	if v == "" || utf8.RuneCountInString(v) > limit || strings.TrimSpace(v) != v {
		return fmt.Errorf("%w: %s must be 1..%d characters, without leading or trailing spaces", sale.ErrInvalidRequest, name, limit)
	}
	for _, c := range v {
		if !unicode.In(c, visible...) {
			return fmt.Errorf("%w: %s must be visible text (letters, marks, numbers, punctuation, symbols, spaces)", sale.ErrInvalidRequest, name)
		}
	}
	return nil
}
