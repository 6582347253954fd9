package monitoring_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// The dashboard parses, its panel ids are unique, every panel that queries
// uses the datasource variable, every expression parses (promtool), and
// every selector of a sale series is narrowed to the namespace and sale
// variables. The live test (live_test.go) then evaluates every expression
// and selector against a real scrape.
func TestDashboard_Lint(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard uid %q title %q: want both", d.UID, d.Title)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" || vars["namespace"] != "query" || vars["flashsale"] != "query" {
		t.Errorf("variables %v: want datasource (datasource), namespace and flashsale (query)", vars)
	}
	ids := map[int]string{}
	queries := 0
	for _, p := range allPanels(d.Panels) {
		if prev, dup := ids[p.ID]; dup || p.ID == 0 {
			t.Errorf("panel %q: id %d already used by %q (or 0)", p.Title, p.ID, prev)
		}
		ids[p.ID] = p.Title
		if p.GridPos == nil {
			t.Errorf("panel %q has no gridPos", p.Title)
		}
		if len(p.Targets) == 0 {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %+v, want uid ${datasource}", p.Title, p.Datasource)
		}
		for _, tg := range p.Targets {
			queries++
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q target %s: datasource %+v, want uid ${datasource}", p.Title, tg.RefID, tg.Datasource)
			}
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q target %s: no expression", p.Title, tg.RefID)
			}
			for _, sel := range vectorSelectors(tg.Expr) {
				if strings.HasPrefix(sel, "flux_order_") || strings.HasPrefix(sel, "up") {
					if !strings.Contains(sel, `namespace="$namespace"`) || !strings.Contains(sel, `flashsale=~"$flashsale"`) {
						t.Errorf("panel %q: selector %s is not narrowed to the namespace and sale variables", p.Title, sel)
					}
				}
			}
		}
	}
	if queries == 0 {
		t.Fatal("the dashboard has no query")
	}

	// Every expression parses: promtool checks them as recording rules.
	type record struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var rules []record
	for i, e := range expressions(t, "ns", "sale") {
		if strings.HasPrefix(e.Source, "panel ") {
			rules = append(rules, record{Record: fmt.Sprintf("dashboard:expr_%d", i), Expr: e.Expr})
		}
	}
	raw, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "dashboard-rules.yaml")
	if err := os.WriteFile(file, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(binary(t, "promtool"), "check", "rules", file).CombinedOutput(); err != nil {
		t.Fatalf("a dashboard expression does not parse: %v\n%s", err, out)
	}
}
