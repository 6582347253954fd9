-- The fence functions plan for index lookups, whatever the statistics say
-- (issue 18).
--
-- A sale's orders, buyers and holds are empty when it opens, and their
-- statistics say so until autovacuum analyzes them (about a minute in).
-- PL/pgSQL plans each statement of a function once per connection and
-- keeps that plan, and for an empty table the cheapest plan joins the
-- batch's members to it by a hash join over a sequential scan. So for the
-- whole on-sale rush every batch scanned every order written so far (its
-- replay check by key, its seat's owner, ...): the 100,000-seat sell-out
-- spent most of PostgreSQL's CPU there, and its rate depended on whether
-- autovacuum happened to analyze during it and invalidate those plans
-- (docs/benchmarks.md, 2026-12-06). pgbench, keyed batches of 11 on a
-- fresh sale: 745 batches/s before, 1,900 after.
--
-- A batch touches a handful of rows of tables that grow to millions: an
-- index lookup per member is right at every size. These settings make the
-- planner take it (sequential scans and hash or merge joins only where
-- nothing else can run) in every function the pods call, and in what
-- they call, for every plan made while one runs.
--
-- A later migration that redefines one of these functions (CREATE OR
-- REPLACE FUNCTION replaces its SET clauses) must repeat them:
-- TestSchema_FenceFunctionsPlanForIndexLookups fails otherwise.

-- +goose Up
ALTER FUNCTION confirm_purchase(bigint, uuid, text, text, integer) SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off;
ALTER FUNCTION check_buyer_limit(text, integer) SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off;
ALTER FUNCTION refuse_seat(bigint) SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off;
ALTER FUNCTION hold_seat(bigint, uuid, text, bigint, integer) SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off;
ALTER FUNCTION confirm_hold(uuid, text, uuid, text) SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off;
ALTER FUNCTION release_hold(uuid) SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off;
ALTER FUNCTION batch_fence_seats(bigint[], text[], text[]) SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off;
ALTER FUNCTION batch_buyer_limit(text[], integer, boolean, text[], text[]) SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off;
ALTER FUNCTION batch_sell_seats(bigint[], text[], text[]) SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off;
ALTER FUNCTION confirm_purchases(bigint[], uuid[], text[], text[], integer) SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off;
ALTER FUNCTION hold_seats(bigint[], uuid[], text[], bigint, integer) SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off;
ALTER FUNCTION confirm_holds(uuid[], text[], uuid[], text[]) SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off;
ALTER FUNCTION cancel_order(uuid, text, text) SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off;

-- +goose Down
ALTER FUNCTION confirm_purchase(bigint, uuid, text, text, integer) RESET ALL;
ALTER FUNCTION check_buyer_limit(text, integer) RESET ALL;
ALTER FUNCTION refuse_seat(bigint) RESET ALL;
ALTER FUNCTION hold_seat(bigint, uuid, text, bigint, integer) RESET ALL;
ALTER FUNCTION confirm_hold(uuid, text, uuid, text) RESET ALL;
ALTER FUNCTION release_hold(uuid) RESET ALL;
ALTER FUNCTION batch_fence_seats(bigint[], text[], text[]) RESET ALL;
ALTER FUNCTION batch_buyer_limit(text[], integer, boolean, text[], text[]) RESET ALL;
ALTER FUNCTION batch_sell_seats(bigint[], text[], text[]) RESET ALL;
ALTER FUNCTION confirm_purchases(bigint[], uuid[], text[], text[], integer) RESET ALL;
ALTER FUNCTION hold_seats(bigint[], uuid[], text[], bigint, integer) RESET ALL;
ALTER FUNCTION confirm_holds(uuid[], text[], uuid[], text[]) RESET ALL;
ALTER FUNCTION cancel_order(uuid, text, text) RESET ALL;
