package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// FlashSaleSpec is one ticketing event: its seats, its window and the
// infrastructure the operator runs for it. The PostgreSQL major version is
// the digits of the image's tag (after the last ':' of the part before any
// '@digest'); an image without a tag proves none, so no rule can compare it.
// +kubebuilder:validation:XValidation:rule="!has(self.startsAt) || !has(self.endsAt) || self.endsAt > self.startsAt",message="endsAt must be after startsAt"
// +kubebuilder:validation:XValidation:rule="(has(self.postgres) && has(self.postgres.external)) == (has(oldSelf.postgres) && has(oldSelf.postgres.external))",message="postgres: a sale cannot switch between a managed and an external PostgreSQL: the other database does not hold this sale's inventory and orders, so seats already sold could be sold again. Create a new FlashSale instead (docs/operations.md, External datastores)"
// +kubebuilder:validation:XValidation:rule="(has(self.redis) && has(self.redis.external)) == (has(oldSelf.redis) && has(oldSelf.redis.external))",message="redis: a sale cannot switch between a managed and an external Redis while it runs: pods on the old and new Redis would not see each other's seat locks. Create a new FlashSale instead (docs/operations.md, External datastores)"
// +kubebuilder:validation:XValidation:rule="(has(self.postgres) && has(self.postgres.external)) || !has(oldSelf.postgres) || !has(oldSelf.postgres.image) || size(oldSelf.postgres.image.find('^[^@]*:[0-9]+[^:/@]*(@|$)').find(':[0-9]+[^:/@]*(@|$)').find('[0-9]+')) == 0 || (has(self.postgres) && has(self.postgres.image) && self.postgres.image.find('^[^@]*:[0-9]+[^:/@]*(@|$)').find(':[0-9]+[^:/@]*(@|$)').find('[0-9]+') == oldSelf.postgres.image.find('^[^@]*:[0-9]+[^:/@]*(@|$)').find(':[0-9]+[^:/@]*(@|$)').find('[0-9]+'))",message="postgres.image: the PostgreSQL major version cannot change in place (its data directory belongs to one major version), and a pinned image cannot be removed. To migrate: pause the sale, pg_dump its database, create a new FlashSale with the new image and restore the dump into it (docs/operations.md, Upgrades); minor versions of the same major may change here"
// +kubebuilder:validation:XValidation:rule="(has(self.postgres) && has(self.postgres.external)) || (has(oldSelf.postgres) && has(oldSelf.postgres.storage) && has(oldSelf.postgres.storage.storageClassName) ? oldSelf.postgres.storage.storageClassName : '-') == (has(self.postgres) && has(self.postgres.storage) && has(self.postgres.storage.storageClassName) ? self.postgres.storage.storageClassName : '-')",message="postgres.storage.storageClassName cannot change: the database's volume was provisioned by its class. To move a sale's orders to another class, pg_dump them and restore them into a new FlashSale (docs/operations.md, Upgrades)"
// +kubebuilder:validation:XValidation:rule="!has(self.waitingRoom) || !has(self.waitingRoom.joinFrom) || !has(self.startsAt) || timestamp(self.waitingRoom.joinFrom) <= timestamp(self.startsAt)",message="waitingRoom.joinFrom must not be after startsAt: the queue opens before the sale"
type FlashSaleSpec struct {
	// DisplayName is the event's name as buyers see it on the sale page
	// (empty: the FlashSale's name). Changing it never restarts the pods.
	// +kubebuilder:validation:MaxLength=200
	// +optional
	DisplayName string `json:"displayName,omitempty"`

	// Tickets is the number of seats, numbered 1..tickets. It may grow
	// during a sale; it never shrinks (sold seats cannot be unsold).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000000
	// +kubebuilder:validation:XValidation:rule="self >= oldSelf",message="tickets may grow but never shrink: seats that exist may already be sold"
	Tickets int64 `json:"tickets"`

	// StartsAt is when purchases open; before it they get 403 sale_not_started.
	// +optional
	StartsAt *metav1.Time `json:"startsAt,omitempty"`

	// EndsAt is when purchases close; from it on they get 403 sale_ended.
	// +optional
	EndsAt *metav1.Time `json:"endsAt,omitempty"`

	// Paused is the kill switch: every purchase gets 503 sale_paused.
	// +optional
	Paused bool `json:"paused,omitempty"`

	// MaxTicketsPerBuyer limits the tickets one buyer may hold; 0 = unlimited.
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxTicketsPerBuyer int32 `json:"maxTicketsPerBuyer,omitempty"`

	// LockTTL is how long a buyer holds a seat while the order is confirmed
	// (the Redis SET NX PX expiry), between 100ms and 60s.
	// +kubebuilder:default="5s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('100ms') && duration(self) <= duration('60s')",message="lockTTL must be between 100ms and 60s"
	// +optional
	LockTTL *metav1.Duration `json:"lockTTL,omitempty"`

	// HoldTTL is how long a checkout hold keeps a seat for its buyer (POST
	// /v1/tickets/{id}/hold, then confirm or release); absent or 0s = holds
	// off, one-step purchases only. Between 10s and 1h. Live: a change
	// applies to holds placed afterwards, without restarting pods.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="duration(self) == duration('0s') || (duration(self) >= duration('10s') && duration(self) <= duration('1h'))",message="holdTTL must be 0s (holds off) or between 10s and 1h"
	// +optional
	HoldTTL *metav1.Duration `json:"holdTTL,omitempty"`

	// HibernateAfter is how long a sale stays SoldOut before it hibernates
	// (an Ended sale hibernates at once): its HPA and PDB are removed, Redis
	// is scaled to 0 and the purchase pods to 1 (orders stay readable),
	// PostgreSQL is kept. Extending endsAt or adding tickets wakes it.
	// +kubebuilder:default="15m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s')",message="hibernateAfter must not be negative"
	// +optional
	HibernateAfter *metav1.Duration `json:"hibernateAfter,omitempty"`

	// WaitingRoom meters buyers through a queue in front of the purchase
	// API: purchases then need a pass the queue hands out (docs/waiting-room.md).
	// Off when absent. Every field is live: changing it never restarts the pods.
	// +optional
	WaitingRoom *WaitingRoomSpec `json:"waitingRoom,omitempty"`

	// BuyerAuth makes buyers prove who they are: every purchase, hold,
	// confirmation, join and order lookup then needs an identity token from
	// the platform's identity provider, and the buyer id is the token's
	// subject (docs/security.md, Buyer identity). Off when absent. The
	// issuer and audiences are live; adding or removing buyerAuth, or
	// naming another Secret, rolls the purchase pods one at a time; a new
	// JWKS in the same Secret key is taken by the running pods.
	// +optional
	BuyerAuth *BuyerAuthSpec `json:"buyerAuth,omitempty"`

	// PurchaseAPI is the Deployment of purchase pods.
	// +kubebuilder:default={}
	// +optional
	PurchaseAPI PurchaseAPISpec `json:"purchaseAPI,omitempty"`

	// Ingress publishes the purchase API on a host; without it buyers use
	// the Service <name>-purchase.
	// +optional
	Ingress *IngressSpec `json:"ingress,omitempty"`

	// FrontDoor caps what one client address may ask of each purchase
	// pod: seat streams open and waiting-room joins (docs/security.md).
	// The client address is the one a trusted proxy forwards. Live:
	// changing it never restarts the pods. Absent: the pods' flags
	// (8 streams, 60 joins a minute, no trusted proxy).
	// +optional
	FrontDoor *FrontDoorSpec `json:"frontDoor,omitempty"`

	// Redis holds the seat locks. Managed by the operator unless external.
	// +optional
	Redis RedisSpec `json:"redis,omitempty"`

	// Postgres holds the orders. Managed by the operator unless external.
	// +optional
	Postgres PostgresSpec `json:"postgres,omitempty"`

	// NetworkPolicy closes the sale's datastores to everyone but its
	// purchase pods, and the pods' metrics port to the operator's
	// monitoring namespaces.
	// +kubebuilder:default={}
	// +optional
	NetworkPolicy NetworkPolicySpec `json:"networkPolicy,omitempty"`

	// Delivery hands the sale's events (confirmed orders, the sale's own
	// moments) to webhook endpoints, signed (Standard Webhooks v1) and
	// retried until acknowledged (docs/delivery.md). Live: adding, removing
	// or changing a webhook never restarts the purchase pods.
	// +optional
	Delivery *DeliverySpec `json:"delivery,omitempty"`

	// DatastoreUpdates says when the operator's own changes to the managed
	// Redis and PostgreSQL pod templates (a newer operator's probes,
	// arguments, default resources) reach this sale. Deferred (the
	// default): while the sale is live they wait, and the condition
	// DatastoreUpdatePending names the fields that would change; they are
	// applied once the sale is not live (not provisioned yet, Scheduled
	// more than 30 minutes before it opens, Ended or hibernated).
	// Immediate: they are applied at once, restarting the datastores
	// (Redis loses its locks, PostgreSQL restarts on its volume). Edits of
	// this sale's own datastore fields (image, resources, tls) are applied
	// at once either way: they are explicit.
	// +kubebuilder:default=Deferred
	// +optional
	DatastoreUpdates DatastoreUpdatePolicy `json:"datastoreUpdates,omitempty"`
}

// DatastoreUpdatePolicy is when the operator's changes to a live sale's
// datastore pod templates are applied.
// +kubebuilder:validation:Enum=Deferred;Immediate
type DatastoreUpdatePolicy string

// Datastore update policies.
const (
	DatastoreUpdatesDeferred  DatastoreUpdatePolicy = "Deferred"
	DatastoreUpdatesImmediate DatastoreUpdatePolicy = "Immediate"
)

// DeliverySpec is where the sale's events go.
type DeliverySpec struct {
	// Webhooks are the endpoints; each gets every event it subscribes to,
	// on its own retry schedule.
	// +kubebuilder:validation:MaxItems=8
	// +listType=map
	// +listMapKey=name
	// +optional
	Webhooks []WebhookSpec `json:"webhooks,omitempty"`

	// RedeliverDead is a token: setting it to a new value moves every
	// dead event (retried for the whole period without a 2xx) back to
	// pending, at once, for every webhook. Any string; a timestamp reads
	// well.
	// +kubebuilder:validation:MaxLength=64
	// +optional
	RedeliverDead string `json:"redeliverDead,omitempty"`
}

// WebhookSpec is one endpoint.
// +kubebuilder:validation:XValidation:rule="has(self.urlSecretRef.name) && size(self.urlSecretRef.name) > 0",message="delivery.webhooks: urlSecretRef.name names the Secret that holds the endpoint's URL"
// +kubebuilder:validation:XValidation:rule="!has(self.signingSecretRef) || (has(self.signingSecretRef.name) && size(self.signingSecretRef.name) > 0)",message="delivery.webhooks: signingSecretRef.name names a Secret (omit signingSecretRef to have one generated)"
// +kubebuilder:validation:XValidation:rule="!has(self.caSecretRef) || !has(self.insecureHTTP) || !self.insecureHTTP",message="delivery.webhooks: caSecretRef verifies an HTTPS endpoint; it cannot go with insecureHTTP"
type WebhookSpec struct {
	// Name names the webhook in status, metrics and the generated signing
	// secret's key: a DNS label of at most 32 characters.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// URLSecretRef is a Secret key holding the endpoint's URL. It must be
	// https:// unless insecureHTTP; redirects are not followed. A URL that
	// breaks these rules is refused at run time (condition WebhooksReady).
	URLSecretRef corev1.SecretKeySelector `json:"urlSecretRef"`

	// SigningSecretRef is a Secret key holding the signing secret(s):
	// whsec_<base64 of 24 to 64 bytes>, several separated by spaces
	// during a rotation (every delivery then carries one signature per
	// secret). Absent: the operator generates one into the Secret
	// <sale>-sale, key webhook-<name>-signing-secret.
	// +optional
	SigningSecretRef *corev1.SecretKeySelector `json:"signingSecretRef,omitempty"`

	// CASecretRef is a Secret key holding the PEM CA bundle that verifies
	// the endpoint (instead of the pods' system roots).
	// +optional
	CASecretRef *corev1.SecretKeySelector `json:"caSecretRef,omitempty"`

	// Events the endpoint receives.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	// +listType=set
	Events []WebhookEvent `json:"events"`

	// InsecureHTTP allows an http:// URL (an in-cluster receiver).
	// +optional
	InsecureHTTP bool `json:"insecureHTTP,omitempty"`
}

// WebhookEvent is a type of event.
// +kubebuilder:validation:Enum=order.confirmed;order.cancelled;sale.on_sale;sale.sold_out;sale.ended
type WebhookEvent string

// Event types.
const (
	EventOrderConfirmed WebhookEvent = "order.confirmed"
	// EventOrderCancelled: the platform cancelled an order through the
	// pods' admin API (its seat is on sale again).
	EventOrderCancelled WebhookEvent = "order.cancelled"
	EventSaleOnSale     WebhookEvent = "sale.on_sale"
	EventSaleSoldOut    WebhookEvent = "sale.sold_out"
	EventSaleEnded      WebhookEvent = "sale.ended"
)

// DeliveryStatus is the delivery of the sale's events, reported by the
// purchase pods.
type DeliveryStatus struct {
	// Summary is "ok" when nothing is pending, else "<n> pending" (and
	// ", <d> dead" when some are dead): the DELIVERY column.
	// +optional
	Summary string `json:"summary,omitempty"`
	// Webhooks, one entry per webhook.
	// +listType=map
	// +listMapKey=name
	// +optional
	Webhooks []WebhookDeliveryStatus `json:"webhooks,omitempty"`
}

// WebhookDeliveryStatus counts one webhook's events.
type WebhookDeliveryStatus struct {
	Name string `json:"name"`
	// Pending events: not acknowledged yet, still retried.
	Pending int64 `json:"pending"`
	// Delivered events (acknowledged with a 2xx).
	Delivered int64 `json:"delivered"`
	// Dead events: retried for the whole period, kept; see
	// spec.delivery.redeliverDead.
	Dead int64 `json:"dead"`
	// OldestPending is when the oldest pending event was made.
	// +optional
	OldestPending *metav1.Time `json:"oldestPending,omitempty"`
	// FailingSince is when the endpoint's current run of failed attempts
	// began; absent while it acknowledges.
	// +optional
	FailingSince *metav1.Time `json:"failingSince,omitempty"`
	// LastError is the last failed attempt's outcome (status code or
	// transport error), for people.
	// +optional
	LastError string `json:"lastError,omitempty"`
}

// WaitingRoomSpec is the sale's queue: who gets in, how fast, in what order.
type WaitingRoomSpec struct {
	// AdmitPerSecond is how many buyers the queue lets in per second, while
	// the inventory leaves room (at most 2 × available seats of admitted
	// buyers who have not bought yet).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	AdmitPerSecond int32 `json:"admitPerSecond"`

	// MaxActiveBuyers caps the admitted buyers shopping at once (admitted
	// within passTTL, no ticket yet); 0 = only the inventory's bound.
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxActiveBuyers int32 `json:"maxActiveBuyers,omitempty"`

	// Order of admission. FIFO: join order, across every pod. Random:
	// everyone who joined before startsAt is shuffled at startsAt; later
	// arrivals queue behind them in arrival order.
	// +kubebuilder:default=FIFO
	// +optional
	Order QueueOrder `json:"order,omitempty"`

	// JoinFrom is when the queue opens (before startsAt: a prequeue); when
	// absent it is open from the start.
	// +optional
	JoinFrom *metav1.Time `json:"joinFrom,omitempty"`

	// PassTTL is how long an admitted buyer's pass lets them buy and hold,
	// between 30s and 24h.
	// +kubebuilder:default="10m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('30s') && duration(self) <= duration('24h')",message="waitingRoom.passTTL must be between 30s and 24h"
	// +optional
	PassTTL *metav1.Duration `json:"passTTL,omitempty"`

	// ProofOfWork makes every join solve a challenge first (a SHA-256
	// with difficulty leading zero bits; the sale page solves it): a bot
	// joining under many buyer ids pays for each. Off when absent or 0.
	// +optional
	ProofOfWork *ProofOfWorkSpec `json:"proofOfWork,omitempty"`
}

// ProofOfWorkSpec is the waiting room's proof of work on join
// (docs/waiting-room.md has the cost per join of each difficulty).
type ProofOfWorkSpec struct {
	// Difficulty is the leading zero bits the challenge's SHA-256 must
	// have: 2^difficulty hashes a join on average. 0 = off.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=28
	Difficulty int32 `json:"difficulty"`
}

// QueueOrder is the order a waiting room admits in.
// +kubebuilder:validation:Enum=FIFO;Random
type QueueOrder string

// Queue orders.
const (
	QueueFIFO   QueueOrder = "FIFO"
	QueueRandom QueueOrder = "Random"
)

// WaitingRoomStatus is the queue as the purchase pods report it.
type WaitingRoomStatus struct {
	// Waiting buyers, behind the serving position.
	Waiting int64 `json:"waiting"`
	// Admitted buyers since the queue opened.
	Admitted int64 `json:"admitted"`
	// ServingPosition: every place up to it has been admitted.
	ServingPosition int64 `json:"servingPosition"`
}

// NetworkPolicySpec switches the sale's NetworkPolicies.
type NetworkPolicySpec struct {
	// Enabled makes the operator own NetworkPolicies <name>-redis,
	// <name>-postgres and <name>-purchase. Default true. They only take
	// effect where the cluster's network plugin enforces NetworkPolicy.
	// +kubebuilder:default=true
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
}

// BuyerAuthSpec says how buyers prove who they are.
type BuyerAuthSpec struct {
	// JWT: signed JSON Web Tokens from the platform's identity provider
	// (an OIDC ID or access token), verified by the purchase pods locally.
	JWT JWTAuthSpec `json:"jwt"`
}

// JWTAuthSpec is where identity tokens come from and whom they are for.
// A token is accepted when it is signed (RS, PS, ES or EdDSA; never none
// or HMAC) by a key of the JWKS document whose kid it names, its iss is
// Issuer, its aud names one of Audiences, and its exp (required) and nbf
// hold within 30s of the pods' clocks.
type JWTAuthSpec struct {
	// Issuer is the tokens' iss, compared exactly.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Issuer string `json:"issuer"`

	// Audiences: a token's aud must name at least one of them (the
	// sale's, or the platform's client id).
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=256
	// +listType=set
	Audiences []string `json:"audiences"`

	// JWKSSecretRef is the key of a Secret in the sale's namespace that
	// holds the identity provider's public keys as a JWKS document
	// ({"keys": [...]}). The purchase pods mount it and re-read it while
	// they run: publish a new key there before it signs, and remove the
	// old one once no token it signed is still valid.
	// +kubebuilder:validation:XValidation:rule="size(self.name) > 0",message="buyerAuth.jwt.jwksSecretRef.name is required"
	// +kubebuilder:validation:XValidation:rule="self.key.matches('^[-._a-zA-Z0-9]+$')",message="buyerAuth.jwt.jwksSecretRef.key must be a Secret key: letters, digits, '-', '_' and '.'"
	// +kubebuilder:validation:XValidation:rule="!has(self.optional) || !self.optional",message="buyerAuth.jwt.jwksSecretRef cannot be optional: without the keys no buyer can be verified"
	JWKSSecretRef corev1.SecretKeySelector `json:"jwksSecretRef"`
}

// PurchaseAPISpec sizes the purchase pods.
// +kubebuilder:validation:XValidation:rule="!has(self.autoscaling) || self.autoscaling.minReplicas <= self.autoscaling.maxReplicas",message="purchaseAPI.autoscaling.minReplicas must not exceed maxReplicas"
type PurchaseAPISpec struct {
	// Replicas of the purchase Deployment (also the scale subresource).
	// Ignored when autoscaling is set.
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=0
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// Autoscaling, when set, gives the replica count to a HorizontalPodAutoscaler.
	// +optional
	Autoscaling *AutoscalingSpec `json:"autoscaling,omitempty"`

	// Image of the purchase pods. When empty at creation the operator
	// records its default (its own image) here, once: operator upgrades
	// never change a live sale; editing this field upgrades this sale.
	// +kubebuilder:validation:MaxLength=512
	// +optional
	Image string `json:"image,omitempty"`

	// ImagePullPolicy of the purchase pods; default: Kubernetes' default
	// for the image's tag.
	// +optional
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// Resources of the purchase container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`
}

// AutoscalingSpec configures the purchase pods' HorizontalPodAutoscaler.
type AutoscalingSpec struct {
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:default=1
	MinReplicas int32 `json:"minReplicas,omitempty"`
	// +kubebuilder:validation:Minimum=1
	MaxReplicas int32 `json:"maxReplicas"`
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +kubebuilder:default=70
	TargetCPUUtilizationPercentage int32 `json:"targetCPUUtilizationPercentage,omitempty"`
}

// IngressSpec publishes the purchase API.
type IngressSpec struct {
	// Host buyers use, e.g. eras-tour-paris.tickets.example.com.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Host string `json:"host"`
	// ClassName of the Ingress; default: the cluster's default class.
	// +optional
	ClassName *string `json:"className,omitempty"`
	// TLSSecretName, when set, serves the host over TLS with that Secret.
	// +optional
	TLSSecretName string `json:"tlsSecretName,omitempty"`
}

// FrontDoorSpec is the per-client caps of the purchase pods.
type FrontDoorSpec struct {
	// TrustedProxies are the CIDRs of the proxies (the Ingress controller's
	// pods) whose X-Forwarded-For / X-Real-IP is believed: a request from
	// one of them is counted against the client it forwards. Requests from
	// other peers are counted against the peer. Empty: per-client caps
	// apply only to direct requests (those without a forwarding header),
	// since behind an Ingress every buyer would share its address. On
	// kind, the pod network: 10.244.0.0/16.
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self.all(c, isCIDR(c))",message="frontDoor.trustedProxies must be CIDRs, like 10.244.0.0/16 or fd00::/8"
	// +listType=set
	// +optional
	TrustedProxies []string `json:"trustedProxies,omitempty"`

	// MaxStreamsPerClient caps the seat streams (GET /v1/events) one client
	// keeps open on one pod; beyond it 429 too_many_requests. 0 = no cap
	// per client (the pod's --max-streams still applies).
	// +kubebuilder:default=8
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000
	// +optional
	MaxStreamsPerClient *int32 `json:"maxStreamsPerClient,omitempty"`

	// JoinsPerClientPerMinute is a token bucket per client and pod for POST
	// /v1/queue: that many at once, refilled at that many a minute; beyond
	// it 429 too_many_requests with Retry-After. 0 = no cap.
	// +kubebuilder:default=60
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100000
	// +optional
	JoinsPerClientPerMinute *int32 `json:"joinsPerClientPerMinute,omitempty"`
}

// RedisSpec is either a Redis the operator runs, or an external one.
// +kubebuilder:validation:XValidation:rule="!has(self.external) || (!has(self.image) && !has(self.resources) && !has(self.tls))",message="redis: set either external or image/resources/tls, not both (an external Redis's TLS is its rediss:// URL)"
type RedisSpec struct {
	// Image of the managed Redis (≥ 7). When empty at creation the operator
	// records its default (--redis-image) here, once.
	// +kubebuilder:validation:MaxLength=512
	// +optional
	Image string `json:"image,omitempty"`
	// Resources of the managed Redis.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`
	// TLS serves the managed Redis over TLS only, with a certificate of
	// the sale's own CA (the purchase pods verify it). Costs some
	// throughput on the hot seat: see docs/benchmarks.md.
	// +optional
	TLS bool `json:"tls,omitempty"`
	// External uses an existing Redis instead of a managed one.
	// +optional
	External *ExternalRedis `json:"external,omitempty"`
}

// ExternalRedis points at an existing Redis (≥ 7). Sales sharing one Redis
// are kept apart by their key prefix fs:<name>:.
// +kubebuilder:validation:XValidation:rule="has(self.urlSecretRef) != has(self.addressSecretRef)",message="redis.external: set exactly one of urlSecretRef (preferred) and addressSecretRef"
type ExternalRedis struct {
	// URLSecretRef is a Secret key holding redis://user:password@host:port/0,
	// or rediss:// for TLS.
	// +optional
	URLSecretRef *corev1.SecretKeySelector `json:"urlSecretRef,omitempty"`
	// AddressSecretRef is a Secret key holding host:port of a Redis without
	// authentication. Deprecated: use urlSecretRef (docs/security.md).
	// +optional
	AddressSecretRef *corev1.SecretKeySelector `json:"addressSecretRef,omitempty"`
	// CASecretRef is a Secret key holding the PEM CA bundle that signed the
	// server certificate of a rediss:// URL; default: the system roots.
	// +optional
	CASecretRef *corev1.SecretKeySelector `json:"caSecretRef,omitempty"`
}

// PostgresSpec is either a PostgreSQL the operator runs, or an external one.
// Its transition rules (image major version, storage class) are on
// FlashSaleSpec, so that they also run when an update drops the whole
// block (kubectl replace).
// +kubebuilder:validation:XValidation:rule="!has(self.external) || (!has(self.image) && !has(self.resources) && !has(self.storage))",message="postgres: set either external or image/resources/storage, not both"
type PostgresSpec struct {
	// Image of the managed PostgreSQL (≥ 13). When empty at creation the
	// operator records its default (--postgres-image) here, once. Minor
	// upgrades are an edit of this field; a major version change is refused.
	// +kubebuilder:validation:MaxLength=512
	// +optional
	Image string `json:"image,omitempty"`
	// Storage of the managed PostgreSQL's volume.
	// +optional
	Storage *StorageSpec `json:"storage,omitempty"`
	// Resources of the managed PostgreSQL.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`
	// ReclaimPolicy says what deleting the FlashSale does to its data: with
	// Retain (the default) the database's volume and credentials stay, so a
	// FlashSale re-created with the same name resumes the same inventory and
	// orders; with Delete they go with the sale.
	// +kubebuilder:validation:Enum=Retain;Delete
	// +kubebuilder:default=Retain
	// +optional
	ReclaimPolicy ReclaimPolicy `json:"reclaimPolicy,omitempty"`
	// External uses an existing database instead of a managed one.
	// +optional
	External *ExternalPostgres `json:"external,omitempty"`
}

// ReclaimPolicy is what deleting a sale does to its data.
type ReclaimPolicy string

// Reclaim policies.
const (
	ReclaimRetain ReclaimPolicy = "Retain"
	ReclaimDelete ReclaimPolicy = "Delete"
)

// StorageSpec is the managed PostgreSQL's PersistentVolumeClaim.
type StorageSpec struct {
	// Size of the volume; default 1Gi. Growing it expands the volume when
	// its StorageClass allows volume expansion; otherwise Ready says why not.
	// +optional
	Size *resource.Quantity `json:"size,omitempty"`
	// StorageClassName; default: the cluster's default class. It cannot
	// change once the sale exists.
	// +optional
	StorageClassName *string `json:"storageClassName,omitempty"`
}

// ExternalPostgres points at an existing database.
type ExternalPostgres struct {
	// URLSecretRef is a Secret key holding a postgres:// URL. Use
	// sslmode=verify-full; with caSecretRef, add
	// sslrootcert=/etc/flux-order/external/postgres-ca.crt.
	URLSecretRef corev1.SecretKeySelector `json:"urlSecretRef"`
	// CASecretRef is a Secret key holding the PEM CA bundle of the
	// database's server certificate, mounted into the purchase pods at
	// /etc/flux-order/external/postgres-ca.crt.
	// +optional
	CASecretRef *corev1.SecretKeySelector `json:"caSecretRef,omitempty"`
}

// Phase is where a sale stands.
// +kubebuilder:validation:Enum=Provisioning;Scheduled;OnSale;Paused;SoldOut;Ended;Degraded
type Phase string

// Phases of a FlashSale.
const (
	PhaseProvisioning Phase = "Provisioning"
	PhaseScheduled    Phase = "Scheduled"
	PhaseOnSale       Phase = "OnSale"
	PhasePaused       Phase = "Paused"
	PhaseSoldOut      Phase = "SoldOut"
	PhaseEnded        Phase = "Ended"
	PhaseDegraded     Phase = "Degraded"
)

// Condition types.
const (
	ConditionReady            = "Ready"
	ConditionRedisReady       = "RedisReady"
	ConditionPostgresReady    = "PostgresReady"
	ConditionPurchaseAPIReady = "PurchaseAPIReady"
	ConditionInventorySeeded  = "InventorySeeded"
	ConditionHibernated       = "Hibernated"
	// ConditionStatusStale is True while a provisioned sale's purchase pods
	// have not reported the counts for longer than the operator's bound
	// (docs/operations.md): the counts on display may be frozen.
	ConditionStatusStale = "StatusStale"
	// ConditionDatastoreUpdatePending is True while the operator's changes
	// to the managed datastores' pod templates wait for the sale to stop
	// being live (spec.datastoreUpdates); its message names the fields.
	ConditionDatastoreUpdatePending = "DatastoreUpdatePending"
	// ConditionWebhooksReady is True when every webhook of
	// spec.delivery resolved (its Secrets exist, its URL is allowed) and
	// was handed to the purchase pods; its message names the ones that did
	// not. Absent webhooks: True, reason NoWebhooks.
	ConditionWebhooksReady = "WebhooksReady"
)

// FlashSaleStatus is observed state. The operator owns every field except
// sold, held, available, waitingRoom, delivery and lastReportTime, which the purchase pods
// report.
type FlashSaleStatus struct {
	// ObservedGeneration is the spec generation the operator last acted on.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Phase of the sale.
	// +optional
	Phase Phase `json:"phase,omitempty"`
	// Tickets is the inventory the purchase pods serve.
	// +optional
	Tickets int64 `json:"tickets,omitempty"`
	// Sold seats, exact, as reported by the purchase pods.
	// +optional
	Sold *int64 `json:"sold,omitempty"`
	// Held seats, under a live checkout hold, exact, as reported by the
	// purchase pods.
	// +optional
	Held *int64 `json:"held,omitempty"`
	// Available seats (tickets - sold - held), exact, as reported by the
	// purchase pods.
	// +optional
	Available *int64 `json:"available,omitempty"`
	// Cancelled orders (their seats went back on sale), as reported by the
	// purchase pods. sold + cancelled never shrinks while the sale is live.
	// +optional
	Cancelled *int64 `json:"cancelled,omitempty"`
	// URL buyers use.
	// +optional
	URL string `json:"url,omitempty"`
	// Replicas of the purchase Deployment (scale subresource).
	// +optional
	Replicas int32 `json:"replicas,omitempty"`
	// ReadyReplicas of the purchase Deployment.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`
	// Selector of the purchase pods (scale subresource, for HPAs).
	// +optional
	Selector string `json:"selector,omitempty"`
	// Hibernated is true while the sale hibernates (see spec.hibernateAfter).
	// +optional
	Hibernated bool `json:"hibernated,omitempty"`
	// SoldOutSince is when the sale was first seen SoldOut (cleared when it
	// is not); hibernation counts spec.hibernateAfter from it.
	// +optional
	SoldOutSince *metav1.Time `json:"soldOutSince,omitempty"`
	// WaitingRoom is the queue, reported by the purchase pods while the
	// sale has a waiting room.
	// +optional
	WaitingRoom *WaitingRoomStatus `json:"waitingRoom,omitempty"`
	// Delivery is the delivery of the sale's events to its webhooks,
	// reported by the purchase pods.
	// +optional
	Delivery *DeliveryStatus `json:"delivery,omitempty"`
	// LastReportTime is when the purchase pods last reported the counts.
	// +optional
	LastReportTime *metav1.Time `json:"lastReportTime,omitempty"`
	// Conditions: Ready, RedisReady, PostgresReady, PurchaseAPIReady,
	// InventorySeeded, Hibernated, StatusStale, DatastoreUpdatePending.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// FlashSale is one flash-sale event with its own Redis, PostgreSQL and
// purchase pods.
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=fs;sale,categories=fluxorder
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.purchaseAPI.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Sold",type=integer,JSONPath=`.status.sold`
// +kubebuilder:printcolumn:name="Held",type=integer,JSONPath=`.status.held`
// +kubebuilder:printcolumn:name="Available",type=integer,JSONPath=`.status.available`
// +kubebuilder:printcolumn:name="Tickets",type=integer,JSONPath=`.spec.tickets`
// +kubebuilder:printcolumn:name="Waiting",type=integer,JSONPath=`.status.waitingRoom.waiting`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.readyReplicas`
// +kubebuilder:printcolumn:name="Hibernated",type=boolean,JSONPath=`.status.hibernated`
// +kubebuilder:printcolumn:name="Delivery",type=string,JSONPath=`.status.delivery.summary`
// +kubebuilder:printcolumn:name="URL",type=string,JSONPath=`.status.url`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.matches('^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$')",message="metadata.name must be a DNS label of at most 40 characters starting with a letter (it names the sale's Services, StatefulSet and volumes)"
type FlashSale struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   FlashSaleSpec   `json:"spec"`
	Status FlashSaleStatus `json:"status,omitempty"`
}

// FlashSaleList is a list of FlashSales.
// +kubebuilder:object:root=true
type FlashSaleList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []FlashSale `json:"items"`
}

func init() {
	SchemeBuilder.Register(&FlashSale{}, &FlashSaleList{})
}
