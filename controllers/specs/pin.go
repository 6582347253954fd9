package specs

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TemplateHashAnnotation on the sale's Redis Deployment and PostgreSQL
// StatefulSet is a hash of the pod template the operator's builders made
// when it was last applied; TemplateInputsAnnotation is a hash of the
// sale's own fields that template was built from (DatastoreInputs). The
// reconciler compares them with what it builds now: a new template hash
// under the same inputs is the operator's change (a newer operator's
// builders), which waits while the sale is live; new inputs are an edit of
// the sale, applied at once.
const (
	TemplateHashAnnotation   = "fluxorder.io/template-hash"
	TemplateInputsAnnotation = "fluxorder.io/template-inputs"
)

// DatastoreInputs are the sale's fields a datastore's pod template is built
// from. Every field is omitempty, and one added later must be too: its
// zero value must leave the hash of a sale that does not use it as it was,
// or an operator upgrade would read as an edit of every sale.
type DatastoreInputs struct {
	Image     string                       `json:"image,omitempty"`
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`
	TLS       bool                         `json:"tls,omitempty"`
}

// pinTemplate stamps a datastore workload with the hashes of its pod
// template and of the inputs it was built from.
func pinTemplate(m *metav1.ObjectMeta, template corev1.PodTemplateSpec, in DatastoreInputs) {
	if m.Annotations == nil {
		m.Annotations = map[string]string{}
	}
	m.Annotations[TemplateHashAnnotation] = hashOf(template)
	m.Annotations[TemplateInputsAnnotation] = hashOf(in)
}
