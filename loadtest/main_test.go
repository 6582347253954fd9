package loadtest

import (
	"fmt"
	"os"
	"testing"

	"github.com/flux-order/flux-order/internal/testservers"
)

// The real servers the audit and end-to-end tests use, started once; a
// missing redis-server or PostgreSQL fails the package, never skips it.
var (
	redisSrv *testservers.Redis
	pgSrv    *testservers.Postgres
)

func TestMain(m *testing.M) {
	os.Exit(func() int {
		var err error
		if redisSrv, err = testservers.StartRedis(); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL: real Redis needed:", err)
			return 1
		}
		defer redisSrv.Close()
		if pgSrv, err = testservers.StartPostgres(); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL: real PostgreSQL needed:", err)
			return 1
		}
		defer pgSrv.Close()
		return m.Run()
	}())
}
