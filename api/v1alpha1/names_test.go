package v1alpha1

import (
	"os"
	"slices"
	"testing"

	"sigs.k8s.io/yaml"
)

// The names spelled in names.go are the generated CRD's.
func TestNames_MatchTheCRD(t *testing.T) {
	raw, err := os.ReadFile("../../config/crd/bases/sales.fluxorder.io_flashsales.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var crd struct {
		Spec struct {
			Group    string
			Names    struct{ Kind, Plural string }
			Versions []struct{ Name string }
		}
	}
	if err := yaml.Unmarshal(raw, &crd); err != nil {
		t.Fatal(err)
	}
	s := crd.Spec
	if s.Group != GroupVersion.Group || s.Names.Kind != FlashSaleKind || s.Names.Plural != FlashSaleResource ||
		!slices.ContainsFunc(s.Versions, func(v struct{ Name string }) bool { return v.Name == GroupVersion.Version }) {
		t.Fatalf("the CRD is %s %s/%s (versions %v); names.go says %s %s/%s", s.Group, s.Names.Kind, s.Names.Plural, s.Versions,
			GroupVersion, FlashSaleKind, FlashSaleResource)
	}
}
