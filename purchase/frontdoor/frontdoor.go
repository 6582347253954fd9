// Package frontdoor caps what one client may ask of a purchase pod: how
// many seat streams (GET /v1/events) it keeps open and how fast it joins
// the waiting room (POST /v1/queue). The client is the address the Ingress
// forwards (X-Forwarded-For, X-Real-IP), believed only from the proxies the
// sale trusts (spec.frontDoor.trustedProxies); docs/security.md explains
// the rules and the Ingress-level alternative.
//
// The per-pod caps (--max-streams) are the seat feed's and apply always;
// these are per client, on top of them.
package frontdoor

import (
	"fmt"
	"hash/maphash"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flux-order/flux-order/purchase/sale"
)

// Defaults of the per-client caps (flags --max-streams-per-client and
// --joins-per-client-per-minute; spec.frontDoor overrides them).
const (
	DefaultMaxStreamsPerClient     = 8
	DefaultJoinsPerClientPerMinute = 60
	// MaxTrustedProxies bounds the list, as the CRD does.
	MaxTrustedProxies = 32
)

// Settings are the door's limits. Zero caps are off.
type Settings struct {
	// TrustedProxies are the peers whose forwarded client address is
	// believed. Empty: every request that carries X-Forwarded-For or
	// X-Real-IP came through some proxy whose buyers would all share its
	// address, so per-client caps apply only to direct requests.
	TrustedProxies []netip.Prefix
	// MaxStreamsPerClient caps the seat streams one client keeps open.
	MaxStreamsPerClient int
	// JoinsPerClientPerMinute is a token bucket per client: that many
	// joins at once, refilled at that many a minute.
	JoinsPerClientPerMinute int
}

// ParsePrefixes parses CIDRs (a bare address is its /32 or /128).
func ParsePrefixes(cidrs []string) ([]netip.Prefix, error) {
	if len(cidrs) > MaxTrustedProxies {
		return nil, fmt.Errorf("at most %d trusted proxies, got %d", MaxTrustedProxies, len(cidrs))
	}
	out := make([]netip.Prefix, 0, len(cidrs))
	for _, c := range cidrs {
		c = strings.TrimSpace(c)
		if c == "" {
			continue
		}
		p, err := netip.ParsePrefix(c)
		if err != nil {
			a, aerr := netip.ParseAddr(c)
			if aerr != nil {
				return nil, fmt.Errorf("%q is not a CIDR (like 10.244.0.0/16) or an address", c)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Door holds the per-client counts of one pod. Its settings change live.
type Door struct {
	settings atomic.Pointer[Settings]

	mu      sync.Mutex
	streams map[netip.Addr]int // open streams per client (entries at 0 are deleted)

	joins   *buckets
	refused *prometheus.CounterVec
}

// New returns a door with s; its series go to reg.
func New(s Settings, reg prometheus.Registerer) *Door {
	d := &Door{streams: map[netip.Addr]int{}, joins: newBuckets(time.Now)}
	d.Set(s)
	d.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flux_order_front_door_refused_total",
		Help: "Requests refused 429 too_many_requests by a per-client cap, by kind (stream, join).",
	}, []string{"kind"})
	reg.MustRegister(d.refused)
	d.refused.WithLabelValues("stream")
	d.refused.WithLabelValues("join")
	return d
}

// Set changes the settings; open streams stay open.
func (d *Door) Set(s Settings) {
	s.TrustedProxies = append([]netip.Prefix(nil), s.TrustedProxies...)
	d.settings.Store(&s)
}

// Settings are the door's settings now.
func (d *Door) Settings() Settings { return *d.settings.Load() }

// Client returns the client address of r, and whether per-client caps
// apply to it:
//   - from a trusted proxy: the rightmost X-Forwarded-For entry that is not
//     itself a trusted proxy (entries to its left are the client's own
//     words), else X-Real-IP; a trusted proxy that forwards no address is
//     not capped (all its buyers would share one bucket);
//   - from any other peer with trusted proxies configured: the peer (its
//     headers are ignored);
//   - with none configured: the peer when the request carries no
//     forwarding header (a direct connection), else not capped.
func (d *Door) Client(r *http.Request) (netip.Addr, bool) {
	return client(d.settings.Load().TrustedProxies, r)
}

func client(trusted []netip.Prefix, r *http.Request) (netip.Addr, bool) {
	peer, ok := peerAddr(r.RemoteAddr)
	if !ok {
		return netip.Addr{}, false
	}
	xff, real := r.Header.Values("X-Forwarded-For"), r.Header.Get("X-Real-Ip")
	if len(trusted) == 0 {
		return peer, len(xff) == 0 && real == ""
	}
	if !within(trusted, peer) {
		return peer, true
	}
	// Walk the hops right to left: each was appended by the proxy after it.
	for i := len(xff) - 1; i >= 0; i-- {
		hops := strings.Split(xff[i], ",")
		for j := len(hops) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(hops[j]))
			if err != nil {
				return netip.Addr{}, false // a hop we cannot read: no bucket to charge
			}
			a = a.Unmap()
			if !within(trusted, a) {
				return a, true
			}
		}
	}
	if a, err := netip.ParseAddr(strings.TrimSpace(real)); err == nil && len(xff) == 0 {
		return a.Unmap(), true
	}
	return netip.Addr{}, false
}

func peerAddr(remote string) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

func within(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// key is the bucket of a client: its IPv4 address, or its IPv6 /64 (one
// subscriber gets a whole /64 and could walk it).
func key(a netip.Addr) netip.Addr {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// streamRetry is the Retry-After of a stream refused per client.
const streamRetry = 10

// OpenStream counts one more stream of r's client, or refuses it with
// sale.ErrTooManyRequests (with Retry-After) when the client has its cap open.
// release must be called when the stream ends.
func (d *Door) OpenStream(r *http.Request) (release func(), err error) {
	max := d.settings.Load().MaxStreamsPerClient
	a, capped := d.Client(r)
	if !capped || max <= 0 {
		return func() {}, nil
	}
	k := key(a)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.streams[k] >= max {
		d.refused.WithLabelValues("stream").Inc()
		return nil, &sale.RetryAfterError{Seconds: streamRetry, Err: sale.ErrTooManyRequests}
	}
	d.streams[k]++
	return func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.streams[k]--; d.streams[k] <= 0 {
			delete(d.streams, k)
		}
	}, nil
}

// Join takes one join token of r's client, or refuses the join.
func (d *Door) Join(r *http.Request) error {
	perMin := d.settings.Load().JoinsPerClientPerMinute
	a, capped := d.Client(r)
	if !capped || perMin <= 0 {
		return nil
	}
	if wait, ok := d.joins.take(key(a), perMin); !ok {
		d.refused.WithLabelValues("join").Inc()
		return &sale.RetryAfterError{Seconds: max(1, int((wait+time.Second-1)/time.Second)), Err: sale.ErrTooManyRequests}
	}
	return nil
}

// buckets are token buckets per client with bounded memory: sharded maps
// in two generations. A bucket untouched for a whole generation (one
// minute, the time any bucket takes to refill) is full again, so dropping
// it forgets nothing; a shard that reaches its share of maxBuckets starts
// a new generation early (only a client cycling through more addresses
// than that gets fresh buckets, and the per-pod caps still bound it).
type buckets struct {
	now    func() time.Time
	seed   maphash.Seed
	shards [bucketShards]bucketShard
}

const (
	bucketShards = 32
	// maxBuckets bounds one generation of every shard: at ~50 B an entry,
	// two generations hold at most ~25 MiB.
	maxBuckets = 1 << 18
	generation = time.Minute
)

type bucketShard struct {
	mu        sync.Mutex
	cur, prev map[[16]byte]bucket
	rotated   int64 // unix ns
}

type bucket struct {
	tokens float64
	at     int64 // unix ns of the last take
}

func newBuckets(now func() time.Time) *buckets {
	b := &buckets{now: now, seed: maphash.MakeSeed()}
	for i := range b.shards {
		b.shards[i].cur = map[[16]byte]bucket{}
		b.shards[i].rotated = now().UnixNano()
	}
	return b
}

// take takes a token from k's bucket (capacity perMin, refilled perMin a
// minute); when empty it returns how long until the next token.
func (b *buckets) take(addr netip.Addr, perMin int) (time.Duration, bool) {
	k := addr.As16()
	s := &b.shards[maphash.Bytes(b.seed, k[:])%bucketShards]
	now := b.now().UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	if now-s.rotated >= int64(generation) || len(s.cur) >= maxBuckets/bucketShards {
		s.prev, s.cur, s.rotated = s.cur, make(map[[16]byte]bucket, len(s.cur)/2), now
	}
	capacity, perNs := float64(perMin), float64(perMin)/float64(generation)
	bk, ok := s.cur[k]
	if !ok {
		if bk, ok = s.prev[k]; ok {
			delete(s.prev, k)
		} else {
			bk = bucket{tokens: capacity, at: now}
		}
	}
	bk.tokens = min(capacity, bk.tokens+float64(now-bk.at)*perNs)
	bk.at = now
	if bk.tokens < 1 {
		s.cur[k] = bk
		return time.Duration((1 - bk.tokens) / perNs), false
	}
	bk.tokens--
	s.cur[k] = bk
	return 0, true
}

// size is the number of buckets held (tests).
func (b *buckets) size() int {
	n := 0
	for i := range b.shards {
		s := &b.shards[i]
		s.mu.Lock()
		n += len(s.cur) + len(s.prev)
		s.mu.Unlock()
	}
	return n
}
