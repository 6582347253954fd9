package statusreport

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// The sale page's name comes from spec.displayName; absent, it is empty
// (the pod shows the sale's name).
func TestSettingsOf_DisplayName(t *testing.T) {
	for want, spec := range map[string]map[string]any{
		"Night of the Flux": {"tickets": int64(10), "displayName": "Night of the Flux"},
		"":                  {"tickets": int64(10)},
	} {
		s, err := settingsOf(&unstructured.Unstructured{Object: map[string]any{"spec": spec}})
		if err != nil || s.DisplayName != want {
			t.Fatalf("spec %v: display name %q (%v), want %q", spec, s.DisplayName, err, want)
		}
	}
}
