package specs

import (
	"fmt"
	"net/url"

	corev1 "k8s.io/api/core/v1"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/internal/redisacl"
)

// Secret keys. Generated material (passwords, the CA key) is made once by
// the controller; every other key is derived from it and the spec, so the
// controller may rewrite derived keys (a Redis switched to TLS gets a
// rediss:// URL) without ever changing a password.
const (
	SecretKeyURL        = "url"
	SecretKeyPass       = "password"
	SecretKeyUser       = "username"
	SecretKeyACL        = "users.acl"
	SecretKeySaleSecret = "sale-secret"
	// SecretKeyAdminToken is the bearer token of the purchase pods' admin
	// API (order cancellation, on their private port), in <sale>-sale.
	SecretKeyAdminToken = "admin-token"
	SecretKeyCACert     = "ca.crt"
	SecretKeyCAKey      = "ca.key"
)

// Mount points in the pods.
const (
	// TLSDir holds a datastore's certificate, key and CA (Secret <s>-tls).
	TLSDir = "/etc/flux-order/tls"
	// CAFile is the sale's CA certificate in the purchase pods.
	CAFile = TLSDir + "/" + SecretKeyCACert
	// ExternalDir holds the CA bundles of external datastores.
	ExternalDir       = "/etc/flux-order/external"
	ExternalPGCAFile  = ExternalDir + "/postgres-ca.crt"
	ExternalRedCAFile = ExternalDir + "/redis-ca.crt"
	// BuyerAuthDir holds the buyers' JWKS (spec.buyerAuth.jwt.jwksSecretRef)
	// in the purchase pods, as BuyerJWKSFile.
	BuyerAuthDir  = "/etc/flux-order/buyer-auth"
	buyerJWKSName = "jwks.json"
	BuyerJWKSFile = BuyerAuthDir + "/" + buyerJWKSName
)

// Names of the sale's Secrets.
func PostgresAdminSecretName(s *salesv1alpha1.FlashSale) string { return s.Name + "-postgres-admin" }
func SaleSecretName(s *salesv1alpha1.FlashSale) string          { return s.Name + "-sale" }
func CASecretName(s *salesv1alpha1.FlashSale) string            { return s.Name + "-ca" }
func TLSSecretName(s *salesv1alpha1.FlashSale) string           { return s.Name + "-tls" }

func secret(s *salesv1alpha1.FlashSale, name, component string, typ corev1.SecretType, data map[string]string) *corev1.Secret {
	b := make(map[string][]byte, len(data))
	for k, v := range data {
		b[k] = []byte(v)
	}
	return &corev1.Secret{
		TypeMeta:   typeMeta("v1", "Secret"),
		ObjectMeta: objectMeta(s, name, component),
		Type:       typ,
		Data:       b,
	}
}

// withData gives a Secret the database volume's lifetime (DataObjectMeta):
// the database's credentials and its CA are kept with the volume.
func withData(s *salesv1alpha1.FlashSale, sec *corev1.Secret) *corev1.Secret {
	sec.ObjectMeta = DataObjectMeta(s, sec.Name, sec.Labels["app.kubernetes.io/component"])
	return sec
}

// PostgresSecret is what the purchase pods log in to the managed database
// with: the app role (not a superuser, owner of the sale's database only)
// and a URL that verifies the server against the sale's CA.
func PostgresSecret(s *salesv1alpha1.FlashSale, password string) *corev1.Secret {
	if s.Spec.Postgres.External != nil {
		return nil
	}
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(PostgresUser, password),
		Host:     fmt.Sprintf("%s.%s.svc:%d", PostgresName(s), s.Namespace, PostgresPort),
		Path:     "/" + PostgresDatabase,
		RawQuery: "sslmode=verify-full&sslrootcert=" + CAFile,
	}
	return withData(s, secret(s, PostgresName(s), ComponentPostgres, corev1.SecretTypeOpaque, map[string]string{
		SecretKeyUser: PostgresUser, SecretKeyPass: password, "database": PostgresDatabase, SecretKeyURL: u.String(),
	}))
}

// PostgresAdminSecret holds the superuser's password. Only the database
// pod reads it (it initialises the data directory with it); the purchase
// pods never mount or reference it, and pg_hba refuses the superuser over
// the network anyway.
func PostgresAdminSecret(s *salesv1alpha1.FlashSale, password string) *corev1.Secret {
	if s.Spec.Postgres.External != nil {
		return nil
	}
	return withData(s, secret(s, PostgresAdminSecretName(s), ComponentPostgres, corev1.SecretTypeOpaque, map[string]string{
		SecretKeyUser: PostgresSuperuser, SecretKeyPass: password,
	}))
}

// RedisSecret holds the managed Redis' ACL file (the default user off, the
// purchase user limited to the service's commands and the sale's keys) and
// the URL the purchase pods log in with.
func RedisSecret(s *salesv1alpha1.FlashSale, password string) *corev1.Secret {
	if s.Spec.Redis.External != nil {
		return nil
	}
	scheme := "redis"
	if s.Spec.Redis.TLS {
		scheme = "rediss"
	}
	u := url.URL{
		Scheme: scheme,
		User:   url.UserPassword(redisacl.User, password),
		Host:   fmt.Sprintf("%s.%s.svc:%d", RedisName(s), s.Namespace, RedisPort),
		Path:   "/0",
	}
	data := map[string]string{
		SecretKeyUser: redisacl.User, SecretKeyPass: password,
		SecretKeyACL: redisacl.File(s.Name, password), SecretKeyURL: u.String(),
	}
	if s.Spec.Redis.TLS {
		// The certificate reloader's user: CONFIG SET only.
		reloaderPass := ReloaderPassword(password)
		data[SecretKeyACL] += "user " + ReloaderUser + " " + ReloaderRules(reloaderPass) + "\n"
		data[SecretKeyReloaderPass] = reloaderPass
	}
	return secret(s, RedisName(s), ComponentRedis, corev1.SecretTypeOpaque, data)
}

// SaleSecret keys what must be unguessable to outsiders: order ids derived
// from Idempotency-Keys are an HMAC under it. It lives as long as the
// orders: a new key would stop a re-created sale's keyed retries from
// meeting their orders. It also holds the admin API's token (adminToken;
// "" leaves the key out, for the caller to fill).
func SaleSecret(s *salesv1alpha1.FlashSale, key, adminToken string) *corev1.Secret {
	data := map[string]string{SecretKeySaleSecret: key}
	if adminToken != "" {
		data[SecretKeyAdminToken] = adminToken
	}
	return withData(s, secret(s, SaleSecretName(s), ComponentPurchase, corev1.SecretTypeOpaque, data))
}

// CASecret is the sale's certificate authority. Only the operator reads
// it (to sign and renew the datastores' certificate); no pod mounts it.
func CASecret(s *salesv1alpha1.FlashSale, certPEM, keyPEM []byte) *corev1.Secret {
	if !NeedsTLS(s) {
		return nil
	}
	return withData(s, secret(s, CASecretName(s), ComponentPostgres, corev1.SecretTypeOpaque, map[string]string{
		SecretKeyCACert: string(certPEM), SecretKeyCAKey: string(keyPEM),
	}))
}

// TLSSecret is the managed datastores' server certificate (valid for both
// Services' names) with the CA that signed it. Postgres and Redis mount all
// of it; the purchase pods mount only ca.crt.
func TLSSecret(s *salesv1alpha1.FlashSale, certPEM, keyPEM, caPEM []byte) *corev1.Secret {
	if !NeedsTLS(s) {
		return nil
	}
	return withData(s, secret(s, TLSSecretName(s), ComponentPostgres, corev1.SecretTypeTLS, map[string]string{
		corev1.TLSCertKey: string(certPEM), corev1.TLSPrivateKeyKey: string(keyPEM), SecretKeyCACert: string(caPEM),
	}))
}

// NeedsTLS says whether the sale runs a managed datastore, which always
// serves TLS (Postgres) or may (Redis): then it has a CA and a certificate.
func NeedsTLS(s *salesv1alpha1.FlashSale) bool {
	return s.Spec.Postgres.External == nil || s.Spec.Redis.TLS
}

// TLSNames are the DNS names the datastores' certificate is valid for.
func TLSNames(s *salesv1alpha1.FlashSale) []string {
	var names []string
	for _, svc := range []string{PostgresName(s), RedisName(s)} {
		names = append(names, svc, svc+"."+s.Namespace, svc+"."+s.Namespace+".svc", svc+"."+s.Namespace+".svc.cluster.local")
	}
	return names
}
