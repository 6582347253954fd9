package purchase

import (
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/flux-order/flux-order/internal/flagerr"
	"github.com/flux-order/flux-order/purchase/buyerauth"
	"github.com/flux-order/flux-order/purchase/delivery"
	"github.com/flux-order/flux-order/purchase/frontdoor"
	"github.com/flux-order/flux-order/purchase/orderstore"
	"github.com/flux-order/flux-order/purchase/sale"
	"github.com/flux-order/flux-order/purchase/seatfeed"
	"github.com/flux-order/flux-order/purchase/waitingroom"
)

// Config is what one purchase pod needs to sell one sale's seats.
type Config struct {
	Sale    string
	Tickets int64
	// Exactly one of RedisURL (redis:// or rediss://, with the ACL user's
	// credentials) and RedisAddr (host:port of a password-less Redis).
	RedisURL  string
	RedisAddr string
	// RedisCAFile is a PEM file of the CA that signed a rediss:// server's
	// certificate (empty: the system roots).
	RedisCAFile string
	// RedisScheme, when set ("redis" or "rediss"), is the scheme RedisURL
	// must have: the operator writes it into the pod template beside the
	// CA file, while the URL comes from a Secret that moves with
	// spec.redis.tls. A pod of the template before such a change, started
	// after it, would otherwise get a rediss:// URL without the CA to check
	// it, stay ready, and answer every purchase 503; it exits instead, and
	// the pods of the current template replace it.
	RedisScheme string
	// DatabaseURL is a postgres:// URL; its TLS settings (sslmode,
	// sslrootcert) are pgx's, used as given.
	DatabaseURL string
	// DatabaseSchema, when set, holds the sale's tables in that schema of
	// the database (an external database shared by several sales).
	DatabaseSchema string
	Listen         string
	MetricsListen  string // "": no metrics listener
	LockTTL        time.Duration
	MaxPerBuyer    int
	Schedule       sale.Schedule
	// DisplayName is the event's name on the sale page ("": Sale). Live:
	// the FlashSale's spec.displayName.
	DisplayName string
	// HoldTTL is how long a checkout hold keeps its seat; 0 turns holds
	// off (one-step purchases only).
	HoldTTL time.Duration

	// SaleSecret keys the order and hold ids derived from Idempotency-Keys
	// and signs the waiting room's queue ids and passes, each under its own
	// derived key (sale.DeriveKey). Required, at least sale.MinSecretLen
	// bytes: the operator generates one per sale.
	SaleSecret string

	// AdminToken is the bearer token of the admin API (order cancellation,
	// issue 19), served on MetricsListen only. Empty turns the admin API
	// off (it answers 404 admin_disabled); set, at least
	// MinAdminTokenLen bytes: the operator generates one per sale (the
	// sale Secret's admin-token).
	AdminToken string

	// MaxStreams caps the seat streams (GET /v1/events) this pod serves at
	// once (0: seatfeed.DefaultMaxStreams); beyond it, 503 with Retry-After.
	MaxStreams int

	// FrontDoor caps seat streams and joins per client address (package
	// frontdoor). Live: the FlashSale's spec.frontDoor, when set, replaces
	// it.
	FrontDoor frontdoor.Settings
	// flagsFrontDoor is FrontDoor as the flags set it, kept when the
	// FlashSale's replaces it (withSettings): removing spec.frontDoor
	// brings the flags' back.
	flagsFrontDoor *frontdoor.Settings

	// Pprof also serves net/http/pprof's /debug/pprof/ on the metrics
	// listener (never on Listen): CPU and heap profiles of a running pod,
	// for hack/bench -profile and for diagnosis. Off by default.
	Pprof bool

	// Batching is the group commit of confirmations, holds and hold
	// confirmations (orderstore.Batching; the zero value is
	// orderstore.DefaultBatching()).
	Batching orderstore.Batching

	// BuyerJWKSFile is a JWKS document of the identity provider's public
	// keys (in a cluster, the mounted key of spec.buyerAuth.jwt.jwksSecretRef),
	// re-read while the pod runs. BuyerAuth are the issuer and audiences
	// tokens must have; identity is on while its Issuer is set. Live: from
	// the FlashSale's spec.buyerAuth.jwt (package buyerauth).
	BuyerJWKSFile string
	BuyerAuth     buyerauth.Settings

	// WaitingRoom meters buyers through a queue (package waitingroom); off
	// while AdmitPerSecond is 0. Live: from the FlashSale's spec.waitingRoom.
	WaitingRoom waitingroom.Settings

	// Delivery is the webhook deliverer (package delivery): the file of
	// resolved webhooks it follows, the retry schedule. Every pod delivers
	// (the shared queue leases each delivery to one pod at a time).
	Delivery delivery.Config

	// ShutdownGrace bounds SIGTERM to exit; DrainDelay is its first part,
	// during which /readyz fails while the pod still serves, so endpoints
	// stop routing to it before its listener closes.
	ShutdownGrace time.Duration
	DrainDelay    time.Duration

	// ReportStatus makes the pod compete to report the sale's counts into
	// FlashSale Namespace/Sale (see package statusreport), and take Tickets,
	// Schedule, MaxPerBuyer, LockTTL and HoldTTL from that FlashSale, at start and
	// live (live.go); PodName is its identity in the election.
	ReportStatus bool
	Namespace    string
	PodName      string
}

// MinAdminTokenLen is the shortest admin token accepted: a guessable
// token would let anyone on the private port cancel orders.
const MinAdminTokenLen = 32

// Bounds of the lock TTL: shorter expires under ordinary Postgres latency,
// longer blocks a seat for too long after a pod dies.
const (
	MinLockTTL = 100 * time.Millisecond
	MaxLockTTL = 60 * time.Second
)

// MaxDisplayName bounds --display-name in characters, as the CRD bounds
// spec.displayName.
const MaxDisplayName = 200

// Bounds of a hold's life. The FlashSale asks for at least 10s (a buyer
// needs time to pay); the flag allows 1s for tests and demos of expiry.
const (
	MinHoldTTL = time.Second
	MaxHoldTTL = time.Hour
)

var saleName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// FieldError is a bad value; Flag names the command-line flag.
type FieldError = flagerr.Error

// Validate returns the first bad value as a *FieldError.
func (c *Config) Validate() error {
	bad := flagerr.New
	switch {
	case c.Sale == "":
		return bad("sale", "is required")
	case !saleName.MatchString(c.Sale):
		return bad("sale", "%q is not a DNS label (lower-case letters, digits and '-', at most 63)", c.Sale)
	case c.ReportStatus && c.Tickets == 0:
		// In a cluster the inventory comes from the FlashSale (live.go).
	case c.Tickets < 1 || c.Tickets > orderstore.MaxTickets:
		return bad("tickets", "must be between 1 and %d, got %d", orderstore.MaxTickets, c.Tickets)
	case c.RedisAddr == "" && c.RedisURL == "":
		return bad("redis-url", "or --redis-addr is required (redis://user:password@host:port/0 of the sale's Redis)")
	case c.RedisAddr != "" && c.RedisURL != "":
		return bad("redis-url", "and --redis-addr are exclusive: give one")
	case c.RedisCAFile != "" && !strings.HasPrefix(c.RedisURL, "rediss://"):
		return bad("redis-ca-file", "needs a rediss:// --redis-url")
	case c.RedisScheme != "" && c.RedisScheme != "redis" && c.RedisScheme != "rediss":
		return bad("redis-scheme", "must be redis, rediss or empty, got %q", c.RedisScheme)
	case c.RedisScheme != "" && !strings.HasPrefix(c.RedisURL, c.RedisScheme+"://"):
		// Never the URL itself: it holds the ACL user's password.
		return bad("redis-url", "is not %s:// as --redis-scheme says: the sale's spec.redis.tls changed after this pod's template was made, and a pod of the current template replaces it", c.RedisScheme)
	case c.DatabaseURL == "":
		return bad("database-url", "is required (postgres://user:password@host:port/db)")
	case c.Listen == "":
		return bad("listen", "is required")
	case len(c.SaleSecret) < sale.MinSecretLen:
		// Without it anyone could compute passes and keyed order ids.
		return bad("sale-secret", "is required, at least %d bytes (the operator sets one per sale; locally: openssl rand -base64 32)", sale.MinSecretLen)
	case c.AdminToken != "" && len(c.AdminToken) < MinAdminTokenLen:
		return bad("admin-token", "must be at least %d bytes (the operator sets one per sale; locally: openssl rand -base64 32), or empty (admin API off)", MinAdminTokenLen)
	case c.LockTTL < MinLockTTL || c.LockTTL > MaxLockTTL:
		return bad("lock-ttl", "must be between %v and %v, got %v", MinLockTTL, MaxLockTTL, c.LockTTL)
	case utf8.RuneCountInString(c.DisplayName) > MaxDisplayName:
		return bad("display-name", "must be at most %d characters", MaxDisplayName)
	case c.HoldTTL != 0 && (c.HoldTTL < MinHoldTTL || c.HoldTTL > MaxHoldTTL):
		return bad("hold-ttl", "must be 0 (holds off) or between %v and %v, got %v", MinHoldTTL, MaxHoldTTL, c.HoldTTL)
	case c.MaxStreams < 0:
		return bad("max-streams", "must be 0 (the default, %d) or more, got %d", seatfeed.DefaultMaxStreams, c.MaxStreams)
	case c.FrontDoor.MaxStreamsPerClient < 0:
		return bad("max-streams-per-client", "must be 0 (no cap per client) or more, got %d", c.FrontDoor.MaxStreamsPerClient)
	case c.FrontDoor.JoinsPerClientPerMinute < 0:
		return bad("joins-per-client-per-minute", "must be 0 (no cap per client) or more, got %d", c.FrontDoor.JoinsPerClientPerMinute)
	case len(c.FrontDoor.TrustedProxies) > frontdoor.MaxTrustedProxies:
		return bad("trusted-proxies", "at most %d CIDRs, got %d", frontdoor.MaxTrustedProxies, len(c.FrontDoor.TrustedProxies))
	case c.MaxPerBuyer < 0:
		return bad("max-per-buyer", "must be 0 (unlimited) or more, got %d", c.MaxPerBuyer)
	case !c.Schedule.StartsAt.IsZero() && !c.Schedule.EndsAt.IsZero() && !c.Schedule.EndsAt.After(c.Schedule.StartsAt):
		return bad("ends-at", "must be after --starts-at")
	case c.ShutdownGrace < 0 || c.DrainDelay < 0 || (c.ShutdownGrace > 0 && c.DrainDelay >= c.ShutdownGrace):
		return bad("drain-delay", "must be shorter than --shutdown-grace (%v), got %v", c.ShutdownGrace, c.DrainDelay)
	case c.Batching != (orderstore.Batching{}) && (c.Batching.Max < 1 || c.Batching.Max > orderstore.MaxBatchMax):
		return bad("confirm-batch-max", "must be between 1 (no batching) and %d, got %d", orderstore.MaxBatchMax, c.Batching.Max)
	case c.Batching != (orderstore.Batching{}) && (c.Batching.Window < 0 || c.Batching.Window > orderstore.MaxBatchWindow):
		return bad("confirm-batch-window", "must be between 0 and %v, got %v", orderstore.MaxBatchWindow, c.Batching.Window)
	case c.Batching != (orderstore.Batching{}) && c.Batching.Validate() != nil:
		return bad("confirm-batch-flushers", "must be between 1 and 64, got %d", c.Batching.Flushers)
	case c.BuyerAuth.On() && len(c.BuyerAuth.Audiences) == 0:
		return bad("buyer-jwt-audience", "is required with --buyer-jwt-issuer (the aud a token must name; repeat for several)")
	case c.BuyerAuth.On() && c.BuyerJWKSFile == "" && !c.ReportStatus:
		return bad("buyer-jwks-file", "is required with --buyer-jwt-issuer (the identity provider's public keys as a JWKS document)")
	case !c.BuyerAuth.On() && len(c.BuyerAuth.Audiences) > 0:
		return bad("buyer-jwt-issuer", "is required with --buyer-jwt-audience")
	case c.WaitingRoom.Validate() != nil:
		return c.WaitingRoom.Validate()
	case c.WaitingRoom.On() && !c.WaitingRoom.JoinFrom.IsZero() && !c.Schedule.StartsAt.IsZero() && c.WaitingRoom.JoinFrom.After(c.Schedule.StartsAt):
		return bad("join-from", "must not be after --starts-at")
	case c.ReportStatus && c.Namespace == "":
		return bad("namespace", "is required with --report-status (the FlashSale's namespace)")
	}
	return nil
}
