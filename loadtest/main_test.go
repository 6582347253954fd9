package loadtest

import (
	"testing"

	"github.com/flux-order/flux-order/purchase/purchasetest"
)

// The real servers the audit and end-to-end tests use, started once by
// purchasetest; a missing redis-server or PostgreSQL fails the package,
// never skips it.
func TestMain(m *testing.M) { purchasetest.Main(m) }
