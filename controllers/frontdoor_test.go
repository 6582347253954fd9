package controllers

import (
	"context"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

// spec.frontDoor: trusted proxies must be CIDRs (CEL), the caps default to
// 8 streams and 60 joins a minute.
func TestFrontDoor_CIDRsValidated_CapsDefaulted(t *testing.T) {
	ns := newNamespace(t)
	sale := func(name string, fd salesv1alpha1.FrontDoorSpec) *salesv1alpha1.FlashSale {
		return &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: salesv1alpha1.FlashSaleSpec{Tickets: 10, FrontDoor: &fd}}
	}
	for i, bad := range [][]string{{"10.244.0.0"}, {"10.244.0.0/33"}, {"10.244.0.0/16", "proxy.local"}} {
		err := k8s.Create(context.Background(), sale("bad-"+string(rune('a'+i)), salesv1alpha1.FrontDoorSpec{TrustedProxies: bad}))
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "frontDoor.trustedProxies must be CIDRs") {
			t.Errorf("%v: want Invalid, got %v", bad, err)
		}
	}
	good := sale("good", salesv1alpha1.FrontDoorSpec{TrustedProxies: []string{"10.244.0.0/16", "fd00::/8"}})
	if err := k8s.Create(context.Background(), good); err != nil {
		t.Fatal(err)
	}
	var got salesv1alpha1.FlashSale
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(good), &got); err != nil {
		t.Fatal(err)
	}
	fd := got.Spec.FrontDoor
	if fd.MaxStreamsPerClient == nil || *fd.MaxStreamsPerClient != 8 || fd.JoinsPerClientPerMinute == nil || *fd.JoinsPerClientPerMinute != 60 {
		t.Fatalf("defaults: %+v", fd)
	}
}

// spec.waitingRoom.proofOfWork.difficulty: 0..28 bits.
func TestWaitingRoom_ProofOfWorkDifficulty_Bounded(t *testing.T) {
	ns := newNamespace(t)
	sale := func(name string, d int32) *salesv1alpha1.FlashSale {
		return &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: salesv1alpha1.FlashSaleSpec{Tickets: 10, WaitingRoom: &salesv1alpha1.WaitingRoomSpec{AdmitPerSecond: 5,
				ProofOfWork: &salesv1alpha1.ProofOfWorkSpec{Difficulty: d}}}}
	}
	for i, d := range []int32{-1, 29} {
		if err := k8s.Create(context.Background(), sale("pow-bad-"+string(rune('a'+i)), d)); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.waitingRoom.proofOfWork.difficulty") {
			t.Errorf("difficulty %d: want Invalid, got %v", d, err)
		}
	}
	if err := k8s.Create(context.Background(), sale("pow-good", 18)); err != nil {
		t.Fatal(err)
	}
}
