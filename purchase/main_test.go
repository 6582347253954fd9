package purchase_test

import (
	"flag"
	"os"
	"testing"

	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/purchasetest"
)

// TestMain starts the real servers every test of this package uses, once.
func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.fuzzworker"); f != nil && f.Value.String() == "true" {
		os.Exit(m.Run()) // a fuzzing worker runs only the fuzz target: no servers
	}
	if url := os.Getenv(fluxOrderStreamClient); url != "" {
		streamClient(url) // the child of BenchmarkEvents_IdleStreamMemory: no servers
		return
	}
	purchasetest.Main(m, closeBrowser) // closeBrowser: the browser tests' Chromium, if they started it
}

// testSale is the harness's sale, with this package's own helpers as
// methods (holds_test.go, queue_helpers_test.go).
type testSale struct{ *purchasetest.Sale }

func newTestSale(t testing.TB, tickets int64, opts ...func(*purchase.Config)) *testSale {
	t.Helper()
	return &testSale{purchasetest.NewSale(t, tickets, opts...)}
}
