package purchase

import (
	"net/netip"
	"testing"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/purchase/frontdoor"
	"github.com/flux-order/flux-order/purchase/statusreport"
)

// The FlashSale's spec.frontDoor replaces the flags' caps at start; once
// it is removed, the flags' come back (not the spec's of the start).
func TestWithSettings_FrontDoorFromTheSpec_FlagsKept(t *testing.T) {
	flags := frontdoor.Settings{MaxStreamsPerClient: 8, JoinsPerClientPerMinute: 60}
	two := int32(2)
	cfg := Config{FrontDoor: flags}.withSettings(statusreport.Settings{Tickets: 1, FrontDoor: &salesv1alpha1.FrontDoorSpec{
		TrustedProxies: []string{"10.244.0.0/16"}, MaxStreamsPerClient: &two}})
	want := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}
	if got := cfg.FrontDoor; got.MaxStreamsPerClient != 2 || got.JoinsPerClientPerMinute != 0 || len(got.TrustedProxies) != 1 || got.TrustedProxies[0] != want[0] {
		t.Fatalf("from the spec: %+v", got)
	}
	if got := cfg.withSettings(statusreport.Settings{Tickets: 1}).FrontDoor; got.MaxStreamsPerClient != 8 || got.JoinsPerClientPerMinute != 60 || len(got.TrustedProxies) != 0 {
		t.Fatalf("spec.frontDoor removed: want the flags' %+v, got %+v", flags, got)
	}
}
