package loadtest

import "testing"

const soldBody = `{"type":"https://fluxorder.io/problems/ticket_sold","title":"Ticket sold","status":409,"detail":"this ticket is already sold","code":"ticket_sold"}` + "\n"

func TestClassify_MapsEachAnswerToItsOutcome(t *testing.T) {
	cases := []struct {
		name   string
		status int
		body   string
		want   Outcome
	}{
		{"an order", 201, `{"orderId":"0190c7b0-0000-7000-8000-000000000001","ticketId":1}`, Created},
		{"a sold seat", 409, soldBody, TicketSold},
		{"a locked seat", 409, `{"status":409,"code":"ticket_locked"}`, TicketLocked},
		{"a seat held during checkout", 409, `{"status":409,"code":"ticket_held"}`, TicketHeld},
		{"a sold-out sale", 409, `{"code":"sold_out","status":409}`, SoldOut},
		{"a code with spaces around the colon", 409, `{"code" : "ticket_locked"}`, TicketLocked},
		{"a code on its own line", 409, "{\n  \"code\":\n  \"sold_out\"\n}", SoldOut},
		{"a detail mentioning code before the real one", 409, `{"detail":"\"code\" matters","code":"ticket_sold"}`, TicketSold},
		{"an unknown 409 code", 409, `{"code":"something_new"}`, OtherAnswer},
		{"a 409 without a body", 409, ``, OtherAnswer},
		{"a 409 with a truncated code", 409, `{"code":"ticket_so`, OtherAnswer},
		{"the buyer limit", 403, `{"code":"buyer_limit_reached"}`, BuyerLimit},
		{"a missing ticket", 404, `{"code":"ticket_not_found"}`, OtherAnswer},
		{"a closed sale", 403, `{"code":"sale_ended"}`, OtherAnswer},
		{"a stray 200", 200, `ok`, OtherAnswer},
		{"an unavailable dependency", 503, `{"code":"unavailable"}`, ServerError},
		{"a gateway error", 502, `<html>bad gateway</html>`, ServerError},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Classify(c.status, []byte(c.body)); got != c.want {
				t.Fatalf("expected %v, got %v", c.want, got)
			}
		})
	}
}

func TestClassify_DoesNotAllocate(t *testing.T) {
	body := []byte(soldBody)
	if n := testing.AllocsPerRun(1000, func() { _ = Classify(409, body) }); n != 0 {
		t.Fatalf("expected 0 allocations per classification, got %v", n)
	}
}

func TestOutcome_NamesAreDistinct(t *testing.T) {
	keys, labels := map[string]bool{}, map[string]bool{}
	for o := range numOutcomes {
		if o.Key() == "" || keys[o.Key()] || labels[o.String()] {
			t.Fatalf("outcome %d: expected a unique key and label, got %q / %q", o, o.Key(), o.String())
		}
		keys[o.Key()], labels[o.String()] = true, true
	}
}
