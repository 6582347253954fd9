package specs

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

// typeMeta is set on every built object: server-side apply needs it.
func typeMeta(apiVersion, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
}

func selector(labels map[string]string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: labels}
}

func podMeta(s *salesv1alpha1.FlashSale, component string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Labels: Labels(s, component)}
}

// withDefaultContainer names the container kubectl exec and logs pick
// when none is given (the datastores' pods also run a reloader).
func withDefaultContainer(m metav1.ObjectMeta, name string) metav1.ObjectMeta {
	m.Annotations = map[string]string{"kubectl.kubernetes.io/default-container": name}
	return m
}

// podSecurity runs every container of the pod as uid (non-root) with the
// runtime's default seccomp profile; volumes are group-owned by uid.
func podSecurity(uid int64) *corev1.PodSecurityContext {
	return &corev1.PodSecurityContext{
		RunAsNonRoot:   ptr.To(true),
		RunAsUser:      ptr.To(uid),
		RunAsGroup:     ptr.To(uid),
		FSGroup:        ptr.To(uid),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

func emptyDir(name string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
}

// secretVolume mounts a Secret's keys read-only with mode.
func secretVolume(name, secret string, mode int32, keys ...string) corev1.Volume {
	src := &corev1.SecretVolumeSource{SecretName: secret, DefaultMode: ptr.To(mode)}
	for _, k := range keys {
		src.Items = append(src.Items, corev1.KeyToPath{Key: k, Path: k})
	}
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Secret: src}}
}

// configMapVolume mounts some keys of a ConfigMap with mode.
func configMapVolume(name, configMap string, mode int32, keys ...string) corev1.Volume {
	src := &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: configMap}, DefaultMode: ptr.To(mode)}
	for _, k := range keys {
		src.Items = append(src.Items, corev1.KeyToPath{Key: k, Path: k})
	}
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{ConfigMap: src}}
}

// service is a ClusterIP Service exposing one named port of a component.
func service(s *salesv1alpha1.FlashSale, name, component, portName string, port int32) *corev1.Service {
	return &corev1.Service{
		TypeMeta:   typeMeta("v1", "Service"),
		ObjectMeta: objectMeta(s, name, component),
		Spec: corev1.ServiceSpec{
			Selector: SelectorLabels(s, component),
			Ports: []corev1.ServicePort{{
				Name: portName, Port: port, TargetPort: intstr.FromString(portName), Protocol: corev1.ProtocolTCP,
			}},
		},
	}
}

func firstOf(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}
