package specs

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// ReloaderContainer is the name of the datastores' certificate reloader.
const ReloaderContainer = "tls-reloader"

// ReloadEvery is how often a reloader compares the certificate files with
// what it last had its server load. With the kubelet's update of a Secret
// volume (up to about a minute and a half), a renewed certificate is
// served within two minutes of the operator writing it.
const ReloadEvery = 10

// ReloadScript is the reloader's loop (sh -c ReloadScript name cmd args...):
// every $RELOAD_EVERY seconds it checksums tls.crt, tls.key and ca.crt in
// $TLS_DIR; when they differ from what was last loaded (and once at
// start), it runs the reload command, which succeeded when it exits 0 and
// prints $RELOAD_EXPECT. A failed reload is tried again on the next turn:
// the server keeps serving what it had.
const ReloadScript = `set -u
sum() { cat "$TLS_DIR/tls.crt" "$TLS_DIR/tls.key" "$TLS_DIR/ca.crt" 2>/dev/null | cksum; }
loaded=""
while :; do
  now=$(sum)
  if [ "$now" != "$loaded" ]; then
    if out=$("$@" 2>&1) && [ "$out" = "$RELOAD_EXPECT" ]; then
      loaded=$now
      echo "loaded the certificate files ($now)"
    else
      echo "reload failed, trying again in $RELOAD_EVERY s: $out" >&2
    fi
  fi
  sleep "$RELOAD_EVERY"
done
`

// reloader is a datastore pod's second container: the same image (so
// nothing more is pulled), the server's TLS files and ReloadScript, which
// makes the server re-read its certificate without a restart.
func reloader(image, expect string, env []corev1.EnvVar, mounts []corev1.VolumeMount, command ...string) corev1.Container {
	return corev1.Container{
		Name:    ReloaderContainer,
		Image:   image,
		Command: append([]string{"sh", "-c", ReloadScript, ReloaderContainer}, command...),
		Env: append([]corev1.EnvVar{
			{Name: "TLS_DIR", Value: TLSDir},
			{Name: "RELOAD_EVERY", Value: strconv.Itoa(ReloadEvery)},
			{Name: "RELOAD_EXPECT", Value: expect},
		}, env...),
		VolumeMounts: append([]corev1.VolumeMount{{Name: "tls", MountPath: TLSDir, ReadOnly: true}}, mounts...),
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("5m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
		},
		SecurityContext: restricted(true),
	}
}

// PostgresReloadCommand makes PostgreSQL re-read its configuration, and
// with it ssl_cert_file, ssl_key_file and ssl_ca_file: the superuser
// through the pod's Unix socket (pg_hba: local trust), as pg_isready does.
// New connections get the new certificate; open ones keep theirs.
func PostgresReloadCommand(socketDir string) []string {
	return []string{"psql", "-h", socketDir, "-U", PostgresSuperuser, "-d", "postgres", "-XAtqc", "SELECT pg_reload_conf()"}
}

// PostgresReloadExpect is what PostgresReloadCommand prints on success.
const PostgresReloadExpect = "t"

// RedisReloadCommand makes Redis (≥ 7.0) re-read its certificate, key and
// CA: CONFIG SET of the TLS files loads them again even when the paths are
// unchanged. It logs in as ReloaderUser (password in $REDISCLI_AUTH) over
// TLS on the pod's loopback; the certificate names the Service, not
// 127.0.0.1, and is the very one being replaced, so it is not verified.
func RedisReloadCommand(port int, dir string) []string {
	return []string{"redis-cli", "--tls", "--insecure", "-h", "127.0.0.1", "-p", strconv.Itoa(port),
		"--user", ReloaderUser, "--no-auth-warning", "CONFIG", "SET",
		"tls-cert-file", dir + "/" + corev1.TLSCertKey,
		"tls-key-file", dir + "/" + corev1.TLSPrivateKeyKey,
		"tls-ca-cert-file", dir + "/" + SecretKeyCACert}
}

// RedisReloadExpect is what RedisReloadCommand prints on success.
const RedisReloadExpect = "OK"

// ReloaderUser is the managed Redis' ACL user of the reloader: it may run
// CONFIG SET and nothing else, and exists only with spec.redis.tls.
const ReloaderUser = "tls-reloader"

// ReloaderRules is ReloaderUser's ACL rule string.
func ReloaderRules(password string) string {
	return "on resetpass >" + password + " resetkeys resetchannels -@all +config|set"
}

// ReloaderPassword is derived from the Redis password (so it is never
// generated, stored apart or changed by itself): HMAC-SHA256 under it of
// a fixed label. Only the Redis pod's reloader gets it.
func ReloaderPassword(redisPassword string) string {
	m := hmac.New(sha256.New, []byte(redisPassword))
	m.Write([]byte("flux-order redis tls reloader v1"))
	return hex.EncodeToString(m.Sum(nil))
}

// SecretKeyReloaderPass holds ReloaderPassword in the Redis Secret.
const SecretKeyReloaderPass = "reloader-password"
