package purchase_test

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/flux-order/flux-order/"

// The import graph of docs/architecture.md: what each package's non-test
// code may import from this repository (beyond internal/ and api/).
var allowedImports = map[string][]string{
	"purchase":                         {"purchase/buyerauth", "purchase/checkout", "purchase/delivery", "purchase/frontdoor", "purchase/httpapi", "purchase/orderstore", "purchase/sale", "purchase/seatfeed", "purchase/seatlock", "purchase/statusreport", "purchase/waitingroom"},
	"purchase/httpapi":                 {"purchase/checkout", "purchase/waitingroom", "purchase/seatfeed", "purchase/page", "purchase/sale"},
	"purchase/checkout":                {"purchase/seatlock", "purchase/orderstore", "purchase/sale"},
	"purchase/waitingroom":             {"purchase/seatlock", "purchase/orderstore", "purchase/sale"},
	"purchase/seatfeed":                {"purchase/seatlock", "purchase/orderstore", "purchase/sale"},
	"purchase/buyerauth":               {"purchase/sale"},
	"purchase/delivery":                {"purchase/orderstore"},
	"purchase/frontdoor":               {"purchase/sale"},
	"purchase/buyerauth/buyerauthtest": {},
	"purchase/page":                    {},
	"purchase/sale":                    {},
	"purchase/seatlock":                {},
	"purchase/orderstore":              {},
	"purchase/statusreport":            {},
	"purchase/purchasetest":            {"purchase", "purchase/checkout", "purchase/httpapi", "purchase/seatlock"},
	"controllers":                      {"controllers/specs"},
	"controllers/specs":                {},
}

// imports lists the repository packages the non-test files of dir import.
func imports(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, im := range af.Imports {
			p := strings.Trim(im.Path.Value, `"`)
			if rest, ok := strings.CutPrefix(p, module); ok && !strings.HasPrefix(rest, "internal/") && !strings.HasPrefix(rest, "api/") {
				out = append(out, rest)
			}
		}
	}
	return out
}

// TestLayout_ImportsFollowTheGraph keeps the packages in their rooms: a new
// import across the graph fails here, not in a review. Every package under
// purchase/ must be listed.
func TestLayout_ImportsFollowTheGraph(t *testing.T) {
	dirs, err := filepath.Glob("*")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if _, listed := allowedImports["purchase/"+d]; !listed && hasGo(d) {
			t.Errorf("package purchase/%s is not in the import graph (docs/architecture.md)", d)
		}
	}
	for pkg, allowed := range allowedImports {
		dir := filepath.Join("..", pkg)
		for _, im := range imports(t, dir) {
			if !slices.Contains(allowed, im) {
				t.Errorf("%s imports %s, which the graph of docs/architecture.md does not allow", pkg, im)
			}
		}
	}
}

func hasGo(dir string) bool {
	m, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	return len(m) > 0
}
