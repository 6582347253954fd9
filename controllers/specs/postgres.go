package specs

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

// The managed database's accounts and name.
const (
	// PostgresUser is the app role the purchase pods log in as: it owns the
	// sale's database and nothing else, and cannot create roles or databases.
	PostgresUser = "fluxorder"
	// PostgresSuperuser initialises the data directory; it can log in only
	// through the pod's Unix socket.
	PostgresSuperuser = "postgres"
	PostgresDatabase  = "fluxorder"
	postgresUID       = 999 // the postgres user of the official image
	defaultPGStorage  = "1Gi"
	pgConfigDir       = "/etc/flux-order/postgres"
	pgSocketDir       = "/var/run/postgresql"
)

// pgHBA lets the app role in over TLS only, into its database only, and
// nobody else over the network. The superuser is reachable through the
// pod's Unix socket (kubectl exec), which is also what the image's
// initialisation and pg_isready use.
const pgHBA = `# managed by flux-order
local   all        all                      trust
hostssl fluxorder  fluxorder  0.0.0.0/0     scram-sha-256
hostssl fluxorder  fluxorder  ::/0          scram-sha-256
host    all        all        0.0.0.0/0     reject
host    all        all        ::/0          reject
`

// pgAppRole runs once, when the image initialises an empty data directory:
// it creates the app role and hands it the sale's database (and with it,
// in PostgreSQL ≥ 15, the public schema).
const pgAppRole = `#!/bin/sh
set -eu
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set app="$FLUX_ORDER_APP_USER" --set pw="$FLUX_ORDER_APP_PASSWORD" --set db="$POSTGRES_DB" <<'SQL'
CREATE ROLE :"app" LOGIN PASSWORD :'pw' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
ALTER DATABASE :"db" OWNER TO :"app";
ALTER SCHEMA public OWNER TO :"app";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
REVOKE ALL ON DATABASE postgres FROM PUBLIC;
SQL
`

// PostgresConfigMap holds the database's pg_hba.conf and the script that
// creates the app role on first start.
func PostgresConfigMap(s *salesv1alpha1.FlashSale) *corev1.ConfigMap {
	if s.Spec.Postgres.External != nil {
		return nil
	}
	return &corev1.ConfigMap{
		TypeMeta:   typeMeta("v1", "ConfigMap"),
		ObjectMeta: objectMeta(s, PostgresName(s), ComponentPostgres),
		Data:       map[string]string{"pg_hba.conf": pgHBA, "10-app-role.sh": pgAppRole},
	}
}

// PostgresService is the database's stable address.
func PostgresService(s *salesv1alpha1.FlashSale) *corev1.Service {
	if s.Spec.Postgres.External != nil {
		return nil
	}
	return service(s, PostgresName(s), ComponentPostgres, "postgres", PostgresPort)
}

// PostgresStatefulSet runs the sale's database on a PersistentVolumeClaim
// that outlives the sale unless reclaimPolicy is Delete: its PVC retention
// policy follows it, so by default deleting the FlashSale never deletes
// confirmed orders.
func PostgresStatefulSet(s *salesv1alpha1.FlashSale, o Options) *appsv1.StatefulSet {
	pg := s.Spec.Postgres
	if pg.External != nil {
		return nil
	}
	size := resource.MustParse(defaultPGStorage)
	var class *string
	if pg.Storage != nil {
		if pg.Storage.Size != nil {
			size = *pg.Storage.Size
		}
		class = pg.Storage.StorageClassName
	}
	fromSecret := func(name, secret, key string) corev1.EnvVar {
		return secretEnv(name, corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Key: key})
	}
	isReady := &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{
			"pg_isready", "-h", pgSocketDir, "-U", PostgresSuperuser, "-d", PostgresDatabase}}},
		PeriodSeconds: 5, TimeoutSeconds: 3,
	}
	container := corev1.Container{
		Name:  "postgres",
		Image: firstOf(pg.Image, o.PostgresImage),
		Ports: []corev1.ContainerPort{{Name: "postgres", ContainerPort: PostgresPort}},
		// TLS on, our pg_hba.conf instead of the image's "host all all all".
		Args: []string{
			"-c", "ssl=on",
			"-c", "ssl_cert_file=" + TLSDir + "/" + corev1.TLSCertKey,
			"-c", "ssl_key_file=" + TLSDir + "/" + corev1.TLSPrivateKeyKey,
			"-c", "ssl_min_protocol_version=TLSv1.2",
			"-c", "hba_file=" + pgConfigDir + "/pg_hba.conf",
			"-c", "password_encryption=scram-sha-256",
		},
		Env: []corev1.EnvVar{
			{Name: "POSTGRES_USER", Value: PostgresSuperuser},
			fromSecret("POSTGRES_PASSWORD", PostgresAdminSecretName(s), SecretKeyPass),
			{Name: "POSTGRES_DB", Value: PostgresDatabase},
			{Name: "FLUX_ORDER_APP_USER", Value: PostgresUser},
			fromSecret("FLUX_ORDER_APP_PASSWORD", PostgresName(s), SecretKeyPass),
			{Name: "PGDATA", Value: "/var/lib/postgresql/data/pgdata"},
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: "data", MountPath: "/var/lib/postgresql/data"}, {Name: "run", MountPath: pgSocketDir}, {Name: "tmp", MountPath: "/tmp"},
			{Name: "tls", MountPath: TLSDir, ReadOnly: true},
			{Name: "config", MountPath: pgConfigDir, ReadOnly: true},
			{Name: "initdb", MountPath: "/docker-entrypoint-initdb.d", ReadOnly: true},
		},
		ReadinessProbe:  isReady,
		SecurityContext: restricted(true),
	}
	container.Resources = withDefaults(pg.Resources, postgresDefaults)
	// Liveness is a TCP check, not pg_isready: PostgreSQL answers "rejecting
	// connections" during crash recovery, and killing it then would only
	// restart the recovery. The startup probe gives a first initdb or a long
	// recovery ten minutes.
	container.StartupProbe = tcpLiveness("postgres", 120)
	container.StartupProbe.PeriodSeconds = 5
	container.LivenessProbe = tcpLiveness("postgres", 6)
	labels := SelectorLabels(s, ComponentPostgres)
	whenDeleted := appsv1.RetainPersistentVolumeClaimRetentionPolicyType
	if !Retains(s) {
		whenDeleted = appsv1.DeletePersistentVolumeClaimRetentionPolicyType
	}
	sts := &appsv1.StatefulSet{
		TypeMeta:   typeMeta("apps/v1", "StatefulSet"),
		ObjectMeta: objectMeta(s, PostgresName(s), ComponentPostgres),
		Spec: appsv1.StatefulSetSpec{
			Replicas:    ptr.To[int32](1),
			ServiceName: PostgresName(s),
			Selector:    selector(labels),
			PersistentVolumeClaimRetentionPolicy: &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
				WhenDeleted: whenDeleted,
				WhenScaled:  appsv1.RetainPersistentVolumeClaimRetentionPolicyType,
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: withDefaultContainer(podMeta(s, ComponentPostgres), container.Name),
				Spec: corev1.PodSpec{
					SecurityContext: podSecurity(postgresUID),
					// The reloader makes PostgreSQL load a renewed
					// certificate without a restart (docs/security.md).
					Containers: []corev1.Container{container, reloader(container.Image, PostgresReloadExpect, nil,
						[]corev1.VolumeMount{{Name: "run", MountPath: pgSocketDir}}, PostgresReloadCommand(pgSocketDir)...)},
					Volumes: []corev1.Volume{
						emptyDir("run"), emptyDir("tmp"),
						// 0440, root-owned, group postgres: what PostgreSQL
						// accepts for a private key it does not own.
						secretVolume("tls", TLSSecretName(s), 0o440),
						configMapVolume("config", PostgresName(s), 0o444, "pg_hba.conf"),
						configMapVolume("initdb", PostgresName(s), 0o555, "10-app-role.sh"),
					},
					// Let PostgreSQL finish a fast shutdown (checkpoint) before SIGKILL.
					TerminationGracePeriodSeconds: ptr.To[int64](60),
				},
			},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
				ObjectMeta: metaForClaim(s),
				Spec: corev1.PersistentVolumeClaimSpec{
					AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					StorageClassName: class,
					Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}},
				},
			}},
		},
	}
	pinTemplate(&sts.ObjectMeta, sts.Spec.Template, DatastoreInputs{Image: pg.Image, Resources: pg.Resources})
	return sts
}

// metaForClaim labels the data volume (data-<sale>-postgres-0) so that it
// can be found after the sale is gone.
func metaForClaim(s *salesv1alpha1.FlashSale) (m metav1.ObjectMeta) {
	m.Name = "data"
	m.Labels = Labels(s, ComponentPostgres)
	return m
}
