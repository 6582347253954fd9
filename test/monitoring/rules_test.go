package monitoring_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Every alert file passes promtool check rules, and has a promtool unit
// test (test/monitoring/rules/<Alert>_test.yaml) that passes: a case where
// it fires and one where it stays silent.
func TestAlerts_PromtoolCheckAndUnitTests(t *testing.T) {
	promtool := binary(t, "promtool")
	dir := root(t)
	var files, tests []string
	for _, a := range alerts(t) {
		files = append(files, a.File)
		test := filepath.Join(dir, ruleTestsDir, a.Name+"_test.yaml")
		raw, err := os.ReadFile(test)
		if err != nil {
			t.Errorf("alert %s has no unit test: %v", a.Name, err)
			continue
		}
		s := string(raw)
		if !strings.Contains(s, "exp_alerts: []") || !strings.Contains(s, "alertname: "+a.Name) || !strings.Contains(s, "exp_labels:") {
			t.Errorf("%s: want a case where %s fires (exp_labels) and one where it stays silent (exp_alerts: [])", test, a.Name)
		}
		tests = append(tests, test)
	}
	if out, err := exec.Command(promtool, append([]string{"check", "rules"}, files...)...).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	if len(tests) == 0 {
		return
	}
	if out, err := exec.Command(promtool, append([]string{"test", "rules"}, tests...)...).CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	extra, _ := filepath.Glob(filepath.Join(dir, ruleTestsDir, "*_test.yaml"))
	if len(extra) != len(tests) {
		t.Errorf("%d rule tests for %d alerts: a test whose alert is gone?", len(extra), len(tests))
	}
}
