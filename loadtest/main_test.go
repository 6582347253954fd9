package loadtest

import (
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

func TestMain(m *testing.M) { os.Exit(testservers.Main(m, &redisSrv, &pgSrv)) }
