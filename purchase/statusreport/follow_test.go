package statusreport

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

// settingsOf decodes the FlashSale as the API server serves it: times in
// RFC 3339, durations as strings, counts as int64.
func TestSettingsOf_DecodesTheTypedSpecAndStatus(t *testing.T) {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "sales.fluxorder.io/v1alpha1", "kind": "FlashSale",
		"metadata": map[string]any{"name": "gig", "namespace": "sales"},
		"spec": map[string]any{
			"tickets": int64(10), "paused": true, "maxTicketsPerBuyer": int64(2),
			"startsAt": "2026-12-24T18:00:00Z", "endsAt": "2026-12-24T20:00:00Z",
			"lockTTL": "5s", "holdTTL": "2m",
			"waitingRoom": map[string]any{"admitPerSecond": int64(7), "maxActiveBuyers": int64(100), "order": "Random",
				"joinFrom": "2026-12-24T17:30:00Z", "passTTL": "10m"},
		},
		"status": map[string]any{"sold": int64(10), "held": int64(0), "available": int64(0)},
	}}
	got, err := settingsOf(u)
	if err != nil {
		t.Fatal(err)
	}
	at := func(s string) time.Time { tm, _ := time.Parse(time.RFC3339, s); return tm }
	want := Settings{Paused: true, StartsAt: at("2026-12-24T18:00:00Z"), EndsAt: at("2026-12-24T20:00:00Z"),
		MaxTicketsPerBuyer: 2, LockTTL: 5 * time.Second, HoldTTL: 2 * time.Minute, Tickets: 10, SoldOut: true,
		WaitingRoom: &salesv1alpha1.WaitingRoomSpec{AdmitPerSecond: 7, MaxActiveBuyers: 100, Order: salesv1alpha1.QueueRandom,
			JoinFrom: &metav1.Time{Time: at("2026-12-24T17:30:00Z")}, PassTTL: &metav1.Duration{Duration: 10 * time.Minute}}}
	if !got.same(want) {
		t.Fatalf("got %+v (waiting room %+v)\nwant %+v (waiting room %+v)", got, got.WaitingRoom, want, want.WaitingRoom)
	}

	// No waiting room, no counts reported yet: off and not sold out.
	delete(u.Object["spec"].(map[string]any), "waitingRoom")
	delete(u.Object, "status")
	if got, err := settingsOf(u); err != nil || got.WaitingRoom != nil || got.SoldOut {
		t.Fatalf("without a waiting room or a status: %+v %v", got, err)
	}

	// A FlashSale this pod cannot decode is an error that names it.
	u.Object["spec"].(map[string]any)["lockTTL"] = "five seconds"
	if _, err := settingsOf(u); err == nil || !strings.Contains(err.Error(), "decode flashsale sales/gig") {
		t.Fatalf("undecodable lockTTL: %v", err)
	}
}

// Follow calls onChange only when the settings change; a waiting room
// decoded again is the same.
func TestSettings_Same(t *testing.T) {
	at := time.Date(2026, 12, 24, 17, 30, 0, 0, time.UTC)
	wr := func(rate int32) *salesv1alpha1.WaitingRoomSpec {
		return &salesv1alpha1.WaitingRoomSpec{AdmitPerSecond: rate, JoinFrom: &metav1.Time{Time: at.Local()},
			PassTTL: &metav1.Duration{Duration: time.Minute}}
	}
	a, b := Settings{Tickets: 5, WaitingRoom: wr(7)}, Settings{Tickets: 5, WaitingRoom: wr(7)}
	b.WaitingRoom.JoinFrom.Time = at // the same instant in another zone
	if !a.same(b) {
		t.Fatal("equal settings differ")
	}
	for _, c := range []Settings{{Tickets: 6, WaitingRoom: wr(7)}, {Tickets: 5, WaitingRoom: wr(8)}, {Tickets: 5}} {
		if a.same(c) || c.same(a) {
			t.Fatalf("%+v (waiting room %+v) is not %+v", c, c.WaitingRoom, a)
		}
	}
}
