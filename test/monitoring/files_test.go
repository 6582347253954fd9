package monitoring_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/flux-order/flux-order/internal/testservers"
)

const (
	alertsDir     = "charts/flux-order/files/alerts"
	dashboardFile = "charts/flux-order/files/dashboards/flux-order.json"
	ruleTestsDir  = "test/monitoring/rules"
)

// root is the repository root (this package is test/monitoring).
func root(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// binary finds promtool or prometheus, failing the test loudly when the
// Debian package is missing.
func binary(t testing.TB, name string) string {
	t.Helper()
	p, err := testservers.PrometheusBinary(name)
	if err != nil {
		t.Fatal(err) // names `apt-get install -y prometheus` (make test-deps does it)
	}
	return p
}

// alert is one rule of files/alerts.
type alert struct {
	File string
	Name string `json:"alert"`
	Expr string `json:"expr"`
}

func alerts(t testing.TB) []alert {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(root(t), alertsDir, "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no alert files in %s (%v)", alertsDir, err)
	}
	var out []alert
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var f struct {
			Groups []struct {
				Rules []alert `json:"rules"`
			} `json:"groups"`
		}
		if err := yaml.Unmarshal(raw, &f); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		for _, g := range f.Groups {
			for _, r := range g.Rules {
				r.File = p
				out = append(out, r)
			}
		}
	}
	return out
}

// panel is a dashboard panel, rows' nested panels included.
type panel struct {
	ID         int             `json:"id"`
	Type       string          `json:"type"`
	Title      string          `json:"title"`
	Datasource *datasource     `json:"datasource"`
	Targets    []target        `json:"targets"`
	Panels     []panel         `json:"panels"`
	GridPos    json.RawMessage `json:"gridPos"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type target struct {
	RefID      string      `json:"refId"`
	Expr       string      `json:"expr"`
	Datasource *datasource `json:"datasource"`
}

type dashboard struct {
	Title      string  `json:"title"`
	UID        string  `json:"uid"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

func readDashboard(t testing.TB) dashboard {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root(t), dashboardFile))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s is not a dashboard's JSON: %v", dashboardFile, err)
	}
	return d
}

// allPanels flattens rows.
func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// expression is one PromQL expression of an alert or a panel, and where it
// comes from.
type expression struct{ Source, Expr string }

// expressions are every alert's and every panel's expressions; the
// dashboard's variables are replaced by namespace and sale.
func expressions(t testing.TB, namespace, sale string) []expression {
	t.Helper()
	var out []expression
	for _, a := range alerts(t) {
		out = append(out, expression{"alert " + a.Name, a.Expr})
	}
	vars := strings.NewReplacer("$namespace", namespace, "$flashsale", sale)
	for _, p := range allPanels(readDashboard(t).Panels) {
		for _, tg := range p.Targets {
			out = append(out, expression{"panel " + p.Title + " " + tg.RefID, vars.Replace(tg.Expr)})
		}
	}
	return out
}
