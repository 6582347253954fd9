package specs

import (
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

// PurchaseServiceAccount is the purchase pods' identity.
func PurchaseServiceAccount(s *salesv1alpha1.FlashSale) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{
		TypeMeta:   typeMeta("v1", "ServiceAccount"),
		ObjectMeta: objectMeta(s, PurchaseName(s), ComponentPurchase),
	}
}

// PurchaseRole lets the purchase pods do exactly what they need: read
// their own FlashSale, write its status (sold/available), and hold their
// reporter Lease. The operator creates that Lease (ReporterLease), so the
// pods need no "create", which RBAC could not limit to one name.
func PurchaseRole(s *salesv1alpha1.FlashSale) *rbacv1.Role {
	group := salesv1alpha1.GroupVersion.Group
	return &rbacv1.Role{
		TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "Role"),
		ObjectMeta: objectMeta(s, PurchaseName(s), ComponentPurchase),
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{group}, Resources: []string{salesv1alpha1.FlashSaleResource}, ResourceNames: []string{s.Name}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{group}, Resources: []string{salesv1alpha1.FlashSaleResource + "/status"}, ResourceNames: []string{s.Name}, Verbs: []string{"get", "patch"}},
			{APIGroups: []string{coordinationv1.GroupName}, Resources: []string{"leases"}, ResourceNames: []string{LeaseName(s)}, Verbs: []string{"get", "update", "patch"}},
		},
	}
}

// PurchaseRoleBinding grants PurchaseRole to PurchaseServiceAccount.
func PurchaseRoleBinding(s *salesv1alpha1.FlashSale) *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{
		TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "RoleBinding"),
		ObjectMeta: objectMeta(s, PurchaseName(s), ComponentPurchase),
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: PurchaseName(s)},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: PurchaseName(s), Namespace: s.Namespace}},
	}
}

// ReporterLease is the Lease the purchase pods elect their status reporter
// with. The operator creates it so that it belongs to the sale (deleted
// with it) and the pods' Role can name it; the pods only update it.
func ReporterLease(s *salesv1alpha1.FlashSale) *coordinationv1.Lease {
	return &coordinationv1.Lease{
		TypeMeta:   typeMeta("coordination.k8s.io/v1", "Lease"),
		ObjectMeta: objectMeta(s, LeaseName(s), ComponentPurchase),
	}
}
