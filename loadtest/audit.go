package loadtest

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Auditor compares what a load test was answered with the truth in the
// sale's Postgres (schema: purchase/orderstore/migrations). It counts the
// orders before the test, so a sale that sold seats earlier can be audited
// again.
type Auditor struct {
	url    string
	before int64
}

// Reconnect points the auditor at another URL of the same database (a
// fresh port-forward, say); the count taken before the load is kept.
func (a *Auditor) Reconnect(url string) { a.url = url }

// AuditReport is the audit's verdict; Problems says what is wrong.
type AuditReport struct {
	OK               bool     `json:"ok"`
	Exact            bool     `json:"exact"`   // new orders must equal the 201s, not just cover them
	Created          int64    `json:"created"` // distinct orders answered 201
	OrdersBefore     int64    `json:"ordersBefore"`
	Orders           int64    `json:"orders"` // after the test
	NewOrders        int64    `json:"newOrders"`
	DistinctTickets  int64    `json:"distinctTickets"` // with an order
	SoldTickets      int64    `json:"soldTickets"`     // tickets.sold
	AvailabilitySold int64    `json:"availabilitySold"`
	Holds            int64    `json:"holds"` // checkout holds in the database (all time)
	Problems         []string `json:"problems,omitempty"`
}

// auditBatch is how many observed orders one query checks.
const auditBatch = 10_000

// CheckDatabaseURL says whether url looks like a Postgres URL, without
// connecting; the error names --audit-database-url and never echoes the
// URL, which may hold a password.
func CheckDatabaseURL(url string) error {
	if !strings.HasPrefix(url, "postgres://") && !strings.HasPrefix(url, "postgresql://") {
		return &FieldError{Flag: "audit-database-url", Msg: "must be a postgres:// URL, like postgres://user:password@host:5432/db"}
	}
	if _, err := pgx.ParseConfig(url); err != nil {
		return &FieldError{Flag: "audit-database-url", Msg: "is not a valid postgres:// URL"}
	}
	return nil
}

// NewAuditor connects to the sale's database and counts its orders, so that
// a wrong URL fails before the load starts rather than after.
func NewAuditor(ctx context.Context, databaseURL string) (*Auditor, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	a := &Auditor{url: databaseURL}
	err := a.withConn(ctx, func(conn *pgx.Conn) error {
		return conn.QueryRow(ctx, `SELECT count(*) FROM orders`).Scan(&a.before)
	})
	if err != nil {
		return nil, fmt.Errorf("--audit-database-url: %w", err)
	}
	return a, nil
}

func (a *Auditor) withConn(ctx context.Context, f func(*pgx.Conn) error) error {
	conn, err := pgx.Connect(ctx, a.url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return f(conn)
}

// Check audits the sale after a test that was answered created: (1) every
// 201 has its order row, for the same ticket; (2) no ticket has two orders;
// (3) the orders created since NewAuditor cover the 201s, and equal them
// when exact (an outage may leave a committed order whose answer was lost);
// (4) GET /v1/availability's sold and the sold tickets equal the orders;
// (5) the checkout holds (checkHolds).
func (a *Auditor) Check(ctx context.Context, created []Order, availability func(context.Context) (Availability, error), exact bool) AuditReport {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	r := AuditReport{Exact: exact, OrdersBefore: a.before}
	problem := func(format string, args ...any) { r.Problems = append(r.Problems, fmt.Sprintf(format, args...)) }

	valid := observedOrders(created, problem)
	r.Created = int64(len(valid))

	err := a.withConn(ctx, func(conn *pgx.Conn) error {
		if err := checkRows(ctx, conn, valid, problem); err != nil {
			return err
		}
		if err := conn.QueryRow(ctx, `SELECT count(*), count(DISTINCT ticket_id), (SELECT count(*) FROM tickets WHERE sold) FROM orders`).
			Scan(&r.Orders, &r.DistinctTickets, &r.SoldTickets); err != nil {
			return err
		}
		if r.Orders != r.DistinctTickets {
			if err := reportDoubleSales(ctx, conn, r.Orders-r.DistinctTickets, problem); err != nil {
				return err
			}
		}
		return checkHolds(ctx, conn, &r.Holds, problem)
	})
	if err != nil {
		problem("querying the database failed: %v", err)
		return r
	}

	r.NewOrders = r.Orders - r.OrdersBefore
	switch {
	case r.NewOrders < r.Created:
		problem("%d orders answered 201 but only %d new orders in Postgres", r.Created, r.NewOrders)
	case exact && r.NewOrders > r.Created:
		problem("%d new orders in Postgres but %d answered 201: an order whose answer was lost "+
			"(5xx or transport error during commit); --audit-exact=false accepts that after an outage", r.NewOrders, r.Created)
	}
	if r.SoldTickets != r.Orders {
		problem("%d tickets are marked sold but Postgres has %d orders", r.SoldTickets, r.Orders)
	}
	av, err := availability(ctx)
	if err != nil {
		problem("availability: %v", err)
	} else if r.AvailabilitySold = av.Sold; av.Sold != r.Orders {
		problem("GET /v1/availability says sold=%d but Postgres has %d orders", av.Sold, r.Orders)
	}
	r.OK = len(r.Problems) == 0
	return r
}

// observedOrders checks the 201s among themselves and returns one Order per
// distinct order id: a zero Order is a 201 whose body could not be read, and
// two orders for one ticket are a double sale the client saw itself.
func observedOrders(created []Order, problem func(string, ...any)) []Order {
	var unreadable int
	orders := make([]Order, 0, len(created))
	for _, o := range created {
		if o.ID == uuid.Nil || o.TicketID == 0 {
			unreadable++
			continue
		}
		orders = append(orders, o)
	}
	if unreadable > 0 {
		problem("%d answers 201 had no readable orderId and ticketId", unreadable)
	}
	slices.SortFunc(orders, func(x, y Order) int {
		return cmp.Or(cmp.Compare(x.TicketID, y.TicketID), bytes.Compare(x.ID[:], y.ID[:]))
	})
	orders = slices.Compact(orders)
	for i := 1; i < len(orders); i++ {
		if orders[i].TicketID == orders[i-1].TicketID {
			problem("double sale: ticket %d was answered 201 for orders %s and %s", orders[i].TicketID, orders[i-1].ID, orders[i].ID)
		}
	}
	return orders
}

// checkRows finds the observed orders without a row for the same ticket.
func checkRows(ctx context.Context, conn *pgx.Conn, orders []Order, problem func(string, ...any)) error {
	var bad int
	var examples []string
	for chunk := range slices.Chunk(orders, auditBatch) {
		ids := make([]string, len(chunk))
		tickets := make([]int64, len(chunk))
		for i, o := range chunk {
			ids[i], tickets[i] = o.ID.String(), o.TicketID
		}
		rows, err := conn.Query(ctx, `
			SELECT x.id, x.ticket, o.ticket_id
			FROM unnest($1::text[], $2::bigint[]) AS x(id, ticket)
			LEFT JOIN orders o ON o.id = x.id::uuid
			WHERE o.ticket_id IS DISTINCT FROM x.ticket`, ids, tickets)
		if err != nil {
			return err
		}
		for rows.Next() {
			var id string
			var ticket int64
			var found *int64
			if err := rows.Scan(&id, &ticket, &found); err != nil {
				rows.Close()
				return err
			}
			bad++
			if len(examples) < 3 {
				if found == nil {
					examples = append(examples, fmt.Sprintf("order %s (ticket %d) does not exist", id, ticket))
				} else {
					examples = append(examples, fmt.Sprintf("order %s was answered for ticket %d but is for ticket %d", id, ticket, *found))
				}
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
	}
	if bad > 0 {
		problem("%d of %d orders answered 201 have no matching order row: %s", bad, len(orders), strings.Join(examples, "; "))
	}
	return nil
}

func reportDoubleSales(ctx context.Context, conn *pgx.Conn, extra int64, problem func(string, ...any)) error {
	rows, err := conn.Query(ctx, `SELECT ticket_id, count(*) FROM orders GROUP BY ticket_id HAVING count(*) > 1 ORDER BY ticket_id LIMIT 5`)
	if err != nil {
		return err
	}
	defer rows.Close()
	var tickets []string
	for rows.Next() {
		var ticket, n int64
		if err := rows.Scan(&ticket, &n); err != nil {
			return err
		}
		tickets = append(tickets, fmt.Sprintf("ticket %d has %d orders", ticket, n))
	}
	if err := rows.Err(); err != nil {
		return err
	}
	problem("double sale: %d orders too many (%s)", extra, strings.Join(tickets, ", "))
	return nil
}

// text is the audit's part of the text summary.
func (r AuditReport) text() string {
	var b strings.Builder
	if r.OK {
		fmt.Fprintf(&b, "  audit       PASS: %s answered 201, %s new orders in Postgres", thousands(r.Created), thousands(r.NewOrders))
		if !r.Exact {
			b.WriteString(" (at least the 201s, --audit-exact=false)")
		}
		fmt.Fprintf(&b, "; %s orders for %s distinct tickets; availability sold %s",
			thousands(r.Orders), thousands(r.DistinctTickets), thousands(r.AvailabilitySold))
		if r.Holds > 0 {
			fmt.Fprintf(&b, "; %s holds consistent", thousands(r.Holds))
		}
		b.WriteByte('\n')
		return b.String()
	}
	fmt.Fprintf(&b, "  audit       FAIL (%s answered 201, %s new orders, %s orders for %s distinct tickets)\n",
		thousands(r.Created), thousands(r.NewOrders), thousands(r.Orders), thousands(r.DistinctTickets))
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "    - %s\n", p)
	}
	return b.String()
}

// holdSpans are the holds that ended by expiry or by their confirmation,
// each with the span it kept its seat: [created_at, end). A released hold's
// end is not recorded, so it is left out.
const holdSpans = `WITH spans AS (
	SELECT h.id, h.ticket_id, h.created_at AS start,
	       CASE WHEN h.state = 'confirmed' THEN o.purchased_at ELSE h.expires_at END AS stop
	FROM holds h LEFT JOIN orders o ON o.id = h.order_id
	WHERE h.state <> 'released')`

// checkHolds audits the checkout holds (migration 00003), if the schema has
// them: no seat held by two holds at once; no seat sold to an order other
// than its hold's while the hold lived; every order from a hold is that
// hold's (same seat and buyer, the hold confirmed with it) and was made
// before the hold expired; every confirmed hold has its order.
func checkHolds(ctx context.Context, conn *pgx.Conn, holds *int64, problem func(string, ...any)) error {
	var has bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('holds') IS NOT NULL`).Scan(&has); err != nil || !has {
		return err
	}
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM holds`).Scan(holds); err != nil {
		return err
	}
	checks := []struct{ what, sql string }{
		{"seats held by two holds at once", holdSpans + `
			SELECT count(*), coalesce(min(a.ticket_id), 0) FROM spans a JOIN spans b
			ON a.ticket_id = b.ticket_id AND a.id < b.id AND a.start < b.stop AND b.start < a.stop`},
		{"seats held by one buyer and sold to another (an order during another's hold)", holdSpans + `
			SELECT count(*), coalesce(min(s.ticket_id), 0) FROM spans s JOIN orders o
			ON o.ticket_id = s.ticket_id AND o.hold_id IS DISTINCT FROM s.id AND o.purchased_at >= s.start AND o.purchased_at < s.stop`},
		{"orders from an expired hold", `
			SELECT count(*), coalesce(min(o.ticket_id), 0) FROM orders o JOIN holds h ON h.id = o.hold_id
			WHERE o.purchased_at >= h.expires_at`},
		{"orders that do not match their hold (seat, buyer or state)", `
			SELECT count(*), coalesce(min(o.ticket_id), 0) FROM orders o JOIN holds h ON h.id = o.hold_id
			WHERE h.ticket_id <> o.ticket_id OR h.buyer_id <> o.buyer_id OR h.state <> 'confirmed' OR h.order_id <> o.id`},
		{"confirmed holds without their order", `
			SELECT count(*), coalesce(min(h.ticket_id), 0) FROM holds h LEFT JOIN orders o ON o.id = h.order_id
			WHERE h.state = 'confirmed' AND o.id IS NULL`},
	}
	for _, c := range checks {
		var n, ticket int64
		if err := conn.QueryRow(ctx, c.sql).Scan(&n, &ticket); err != nil {
			return fmt.Errorf("%s: %w", c.what, err)
		}
		if n > 0 {
			problem("%d %s (e.g. ticket %d)", n, c.what, ticket)
		}
	}
	return nil
}
