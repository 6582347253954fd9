package httpapi

import (
	"strconv"
	"testing"
)

// The status label of every outcome is the status the answer carries (the
// problem table's), so `status=~"5.."` selects exactly the 5xx answers.
func TestStatusOf_EveryOutcomeIsLabelledWithItsAnswersStatus(t *testing.T) {
	for _, p := range problems {
		if got := statusOf(p.code); got != strconv.Itoa(p.status) {
			t.Errorf("%s: status label %s, want %d", p.code, got, p.status)
		}
	}
	for outcome, want := range map[string]string{"created": "201", "replayed": "201", "released": "204", "no-such-outcome": "500"} {
		if got := statusOf(outcome); got != want {
			t.Errorf("%s: status label %s, want %s", outcome, got, want)
		}
	}
}
