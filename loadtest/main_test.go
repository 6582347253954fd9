package loadtest

import (
	"os"
	"testing"

	"github.com/flux-order/flux-order/purchase/purchasetest"
)

// The real servers the audit and end-to-end tests use, started once by
// purchasetest; a missing redis-server or PostgreSQL fails the package,
// never skips it. Started by BenchmarkClient as its server, the binary
// serves instead and runs nothing.
func TestMain(m *testing.M) {
	if os.Getenv(fluxOrderBenchServer) != "" {
		serveBench()
		return
	}
	purchasetest.Main(m)
}
