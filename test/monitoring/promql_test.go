package monitoring_test

import (
	"slices"
	"strings"
	"testing"
	"unicode"
)

// vectorSelectors returns the vector selectors of a PromQL expression, as
// written (metric name and matchers): what must exist in a live scrape for
// the expression to mean anything. It is a small lexer, not a parser: it
// knows the keywords, aggregations and modifiers the rules and the
// dashboard use, and skips strings, range and subquery brackets, numbers
// and label lists (by, without, on, ignoring, group_left, group_right).
func vectorSelectors(expr string) []string {
	var out []string
	i := 0
	skipSpace := func() {
		for i < len(expr) && unicode.IsSpace(rune(expr[i])) {
			i++
		}
	}
	// closing finds the index after the bracket closing the one at i,
	// skipping quoted strings.
	closing := func(open, close byte) int {
		depth := 0
		for j := i; j < len(expr); j++ {
			switch c := expr[j]; {
			case c == '"' || c == '\'' || c == '`':
				for j++; j < len(expr) && expr[j] != c; j++ {
					if expr[j] == '\\' && c != '`' {
						j++
					}
				}
			case c == open:
				depth++
			case c == close:
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return len(expr)
	}
	for i < len(expr) {
		c := expr[i]
		switch {
		case unicode.IsSpace(rune(c)):
			i++
		case c == '"' || c == '\'' || c == '`':
			i = closingQuote(expr, i)
		case c == '[':
			i = closing('[', ']')
		case c == '{': // a selector without a name
			end := closing('{', '}')
			out = append(out, expr[i:end])
			i = end
		case isIdentStart(c):
			start := i
			for i < len(expr) && isIdentChar(expr[i]) {
				i++
			}
			word := expr[start:i]
			skipSpace()
			next := byte(0)
			if i < len(expr) {
				next = expr[i]
			}
			switch {
			case slices.Contains(labelListKeywords, word):
				if next == '(' {
					i = closing('(', ')')
				}
			case slices.Contains(operatorKeywords, word), next == '(':
				// a keyword, or a function or aggregation called here
			case slices.Contains(aggregations, word):
				// "sum by (…) (…)": the label list follows
			default:
				sel := word
				if next == '{' {
					end := closing('{', '}')
					sel += expr[i:end]
					i = end
				}
				out = append(out, sel)
			}
		case c >= '0' && c <= '9' || c == '.':
			for i < len(expr) && (isIdentChar(expr[i]) || expr[i] == '.') {
				i++ // a number or a duration (offset 5m)
			}
		default:
			i++
		}
	}
	return out
}

var (
	labelListKeywords = []string{"by", "without", "on", "ignoring", "group_left", "group_right"}
	operatorKeywords  = []string{"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "Inf", "NaN"}
	aggregations      = []string{"sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values"}
)

func isIdentStart(c byte) bool { return c == '_' || c == ':' || unicode.IsLetter(rune(c)) }
func isIdentChar(c byte) bool  { return isIdentStart(c) || c >= '0' && c <= '9' }

func closingQuote(s string, i int) int {
	q := s[i]
	for i++; i < len(s) && s[i] != q; i++ {
		if s[i] == '\\' && q != '`' {
			i++
		}
	}
	return i + 1
}

func TestVectorSelectors(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`up`, []string{`up`}},
		{`sum by (namespace, flashsale) (rate(a_total{outcome=~"x|y"}[2m])) / sum by (namespace) (rate(a_total[2m])) > 0.01`,
			[]string{`a_total{outcome=~"x|y"}`, `a_total`}},
		{`histogram_quantile(0.99, sum by (le) (rate(h_bucket{a="b", c="}"}[5m]))) > 1 or max without (pod) (g) offset 5m`,
			[]string{`h_bucket{a="b", c="}"}`, `g`}},
		{`(max by (namespace, flashsale) (p{phase="OnSale"}) == 1) and on (namespace, flashsale) (changes(q[1m]) == 0)`,
			[]string{`p{phase="OnSale"}`, `q`}},
		{`sum(x{namespace="$namespace", flashsale=~"$flashsale"}) by (le) + count({__name__="y"})`,
			[]string{`x{namespace="$namespace", flashsale=~"$flashsale"}`, `{__name__="y"}`}},
	} {
		if got := vectorSelectors(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("vectorSelectors(%s)\n got %q\nwant %q", strings.TrimSpace(tc.expr), got, tc.want)
		}
	}
}
