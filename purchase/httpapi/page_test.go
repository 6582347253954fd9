package httpapi

import (
	"os"
	"regexp"
	"testing"
)

// Every problem code of the API has a sentence in the page.
func TestPage_HasAMessageForEveryProblemCode(t *testing.T) {
	js, err := os.ReadFile("../page/app.js")
	if err != nil {
		t.Fatal(err)
	}
	codes := map[string]bool{unknownProblem.code: true} // "internal" is shown with its code
	// The admin API's codes never reach a page (private port).
	for _, c := range []error{errAdminDisabled, errAdminAuthRequired, errAdminAuthInvalid} {
		codes[problemFor(c).code] = true
	}
	for _, p := range problems {
		if codes[p.code] {
			continue
		}
		codes[p.code] = true
		if !regexp.MustCompile(`\n\s+` + p.code + `: '`).Match(js) {
			t.Errorf("the page has no message for the problem code %q", p.code)
		}
	}
}
