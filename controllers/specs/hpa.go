package specs

import (
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	"k8s.io/utils/ptr"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

// PurchaseHPA scales the purchase pods on CPU; nil without autoscaling.
func PurchaseHPA(s *salesv1alpha1.FlashSale) *autoscalingv2.HorizontalPodAutoscaler {
	as := s.Spec.PurchaseAPI.Autoscaling
	if as == nil {
		return nil
	}
	return &autoscalingv2.HorizontalPodAutoscaler{
		TypeMeta:   typeMeta("autoscaling/v2", "HorizontalPodAutoscaler"),
		ObjectMeta: objectMeta(s, PurchaseName(s), ComponentPurchase),
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: PurchaseName(s)},
			MinReplicas:    ptr.To(max(as.MinReplicas, 1)),
			MaxReplicas:    as.MaxReplicas,
			Metrics: []autoscalingv2.MetricSpec{{
				Type: autoscalingv2.ResourceMetricSourceType,
				Resource: &autoscalingv2.ResourceMetricSource{
					Name:   "cpu",
					Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: ptr.To(as.TargetCPUUtilizationPercentage)},
				},
			}},
		},
	}
}
