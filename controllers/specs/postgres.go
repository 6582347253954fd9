package specs

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

// The managed database's account and name, and the Secret keys holding them.
const (
	PostgresUser     = "fluxorder"
	PostgresDatabase = "fluxorder"
	SecretKeyURL     = "url"
	SecretKeyPass    = "password"
	postgresUID      = 999 // the postgres user of the official image
	defaultPGStorage = "1Gi"
)

// PostgresSecret holds the managed database's generated credentials and
// the URL the purchase pods use. The controller creates it once and never
// rewrites it: a new password would lock the pods out of existing data. It
// shares the volume's lifetime (DataObjectMeta).
func PostgresSecret(s *salesv1alpha1.FlashSale, password string) *corev1.Secret {
	if s.Spec.Postgres.External != nil {
		return nil
	}
	url := fmt.Sprintf("postgres://%s:%s@%s.%s.svc:%d/%s?sslmode=disable",
		PostgresUser, password, PostgresName(s), s.Namespace, PostgresPort, PostgresDatabase)
	return &corev1.Secret{
		TypeMeta:   typeMeta("v1", "Secret"),
		ObjectMeta: DataObjectMeta(s, PostgresName(s), ComponentPostgres),
		Type:       corev1.SecretTypeOpaque,
		StringData: map[string]string{"username": PostgresUser, SecretKeyPass: password, "database": PostgresDatabase, SecretKeyURL: url},
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
	secretEnv := func(name, key string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: PostgresName(s)}, Key: key}}}
	}
	isReady := &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{
			"pg_isready", "-h", "127.0.0.1", "-U", PostgresUser, "-d", PostgresDatabase}}},
		PeriodSeconds: 5, TimeoutSeconds: 3,
	}
	container := corev1.Container{
		Name:            "postgres",
		Image:           firstOf(pg.Image, o.PostgresImage),
		Ports:           []corev1.ContainerPort{{Name: "postgres", ContainerPort: PostgresPort}},
		Env:             []corev1.EnvVar{{Name: "POSTGRES_USER", Value: PostgresUser}, {Name: "POSTGRES_DB", Value: PostgresDatabase}, secretEnv("POSTGRES_PASSWORD", SecretKeyPass), {Name: "PGDATA", Value: "/var/lib/postgresql/data/pgdata"}},
		VolumeMounts:    []corev1.VolumeMount{{Name: "data", MountPath: "/var/lib/postgresql/data"}, {Name: "run", MountPath: "/var/run/postgresql"}, {Name: "tmp", MountPath: "/tmp"}},
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
	return &appsv1.StatefulSet{
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
				ObjectMeta: podMeta(s, ComponentPostgres),
				Spec: corev1.PodSpec{
					SecurityContext: podSecurity(postgresUID),
					Containers:      []corev1.Container{container},
					Volumes:         []corev1.Volume{emptyDir("run"), emptyDir("tmp")},
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
}

// metaForClaim labels the data volume (data-<sale>-postgres-0) so that it
// can be found after the sale is gone.
func metaForClaim(s *salesv1alpha1.FlashSale) (m metav1.ObjectMeta) {
	m.Name = "data"
	m.Labels = Labels(s, ComponentPostgres)
	return m
}
