// Package monitoring_test checks the chart's alerts and dashboard: promtool
// checks and unit-tests every alert file, the dashboard is linted, and a
// real Prometheus scrapes a real purchase pod and the real manager to prove
// that every series an alert or a panel selects exists (issue 20; the
// CloudNativePG #8978 lesson: a renamed metric must fail a test, not a
// dashboard in production).
package monitoring_test
