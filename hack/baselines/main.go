// Command baselines serves the purchase API's specific-seat call with one of
// the two designs a team would otherwise pick, so `make bench` can measure
// Flux-Order against them with the same load client. Benchmark-only: never
// part of the product.
//
//	optimistic  a version column and retries (the seed's first attempt):
//	            SELECT version; UPDATE … WHERE version = $v; retry on conflict
//	nowait      Postgres-only fail fast: SELECT … FOR UPDATE NOWAIT
//
// Every request touches the database, which is the point of comparison.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

const schema = `
DROP TABLE IF EXISTS baseline_orders, baseline_tickets;
CREATE TABLE baseline_tickets (id bigint PRIMARY KEY, sold boolean NOT NULL DEFAULT false, version int NOT NULL DEFAULT 0);
CREATE TABLE baseline_orders (id uuid PRIMARY KEY, ticket_id bigint NOT NULL UNIQUE, buyer_id text NOT NULL,
  purchased_at timestamptz NOT NULL DEFAULT now());
`

var (
	errSold   = errors.New("ticket_sold")
	errLocked = errors.New("ticket_locked")
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8090", "address to serve")
	dbURL := flag.String("database-url", "", "postgres URL (its baseline_* tables are recreated)")
	strategy := flag.String("strategy", "nowait", "optimistic or nowait")
	tickets := flag.Int64("tickets", 1000, "seats to seed")
	retries := flag.Int("retries", 3, "optimistic: attempts before giving up with 409 ticket_locked")
	flag.Parse()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, *dbURL)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := pool.Exec(ctx, schema); err != nil {
		log.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO baseline_tickets (id) SELECT generate_series(1, $1::bigint)`, *tickets); err != nil {
		log.Fatal(err)
	}
	buy := map[string]func(context.Context, *pgxpool.Pool, int64, string, int) (string, error){
		"optimistic": buyOptimistic, "nowait": buyNoWait,
	}[*strategy]
	if buy == nil {
		log.Fatalf("--strategy must be optimistic or nowait, got %q", *strategy)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/tickets/{id}/purchase", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil || id < 1 || id > *tickets {
			problem(w, http.StatusNotFound, "ticket_not_found")
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		orderID, err := buy(ctx, pool, id, r.Header.Get("X-Buyer"), *retries)
		switch {
		case errors.Is(err, errSold):
			problem(w, http.StatusConflict, "ticket_sold")
		case errors.Is(err, errLocked):
			problem(w, http.StatusConflict, "ticket_locked")
		case err != nil:
			problem(w, http.StatusServiceUnavailable, "unavailable")
		default:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusCreated)
			fmt.Fprintf(w, `{"orderId":%q,"ticketId":%d,"buyerId":"b","purchasedAt":%q}`+"\n", orderID, id, time.Now().UTC().Format(time.RFC3339Nano))
		}
	})
	mux.HandleFunc("GET /v1/availability", func(w http.ResponseWriter, r *http.Request) {
		var sold int64
		_ = pool.QueryRow(r.Context(), `SELECT count(*) FROM baseline_orders`).Scan(&sold)
		fmt.Fprintf(w, `{"tickets":%d,"sold":%d,"available":%d}`+"\n", *tickets, sold, *tickets-sold)
	})
	log.Printf("baseline %s serving %d seats on %s", *strategy, *tickets, *listen)
	log.Fatal(http.ListenAndServe(*listen, mux))
}

func problem(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"type":"https://fluxorder.io/problems/%s","title":%q,"status":%d,"code":%q}`+"\n", code, code, status, code)
}

func insertOrder(ctx context.Context, tx pgx.Tx, id int64, buyer string) (string, error) {
	orderID := uuid.New().String()
	_, err := tx.Exec(ctx, `INSERT INTO baseline_orders (id, ticket_id, buyer_id) VALUES ($1, $2, $3)`, orderID, id, buyer)
	return orderID, err
}

// buyOptimistic reads the version and updates only if nobody else did,
// retrying a few times on conflict: every loser costs database round trips.
func buyOptimistic(ctx context.Context, pool *pgxpool.Pool, id int64, buyer string, retries int) (string, error) {
	for range retries {
		var sold bool
		var version int
		if err := pool.QueryRow(ctx, `SELECT sold, version FROM baseline_tickets WHERE id = $1`, id).Scan(&sold, &version); err != nil {
			return "", err
		}
		if sold {
			return "", errSold
		}
		var orderID string
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, `UPDATE baseline_tickets SET sold = true, version = version + 1 WHERE id = $1 AND version = $2`, id, version)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 0 {
				return errLocked // somebody else changed it: retry
			}
			orderID, err = insertOrder(ctx, tx, id, buyer)
			return err
		})
		if !errors.Is(err, errLocked) {
			return orderID, err
		}
	}
	return "", errLocked
}

// buyNoWait fails fast in Postgres: the row lock is the seat lock.
func buyNoWait(ctx context.Context, pool *pgxpool.Pool, id int64, buyer string, _ int) (string, error) {
	var orderID string
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var sold bool
		err := tx.QueryRow(ctx, `SELECT sold FROM baseline_tickets WHERE id = $1 FOR UPDATE NOWAIT`, id).Scan(&sold)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "55P03" { // lock_not_available
			return errLocked
		}
		if err != nil {
			return err
		}
		if sold {
			return errSold
		}
		if _, err := tx.Exec(ctx, `UPDATE baseline_tickets SET sold = true WHERE id = $1`, id); err != nil {
			return err
		}
		orderID, err = insertOrder(ctx, tx, id, buyer)
		return err
	})
	return orderID, err
}
