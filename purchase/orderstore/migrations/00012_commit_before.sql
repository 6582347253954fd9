-- A keyed batch commits in the round trip that runs it (issue 18).
--
-- Since 4d9e3e8 a batch with keyed members ran in an explicit transaction
-- whose COMMIT the pod sent only once the statement's answer was back and
-- before the statement's deadline, so that no keyed order could commit
-- after its buyer was answered 503 naming it (GET /v1/orders/{id} of a
-- derived id trusts the order's advisory lock: free and no order means
-- none will come). That COMMIT was a second round trip per batch: it held
-- the batch's flusher slot and row locks one round trip longer and cost
-- the 100,000-seat sell-out about a third of its rate (docs/benchmarks.md).
--
-- Now the locks, the statement and commit_before leave in one pipeline
-- with one Sync, which PostgreSQL runs as one implicit transaction and
-- commits at the Sync: commit_before makes PostgreSQL, not the pod, refuse
-- the commit once the deadline (less a margin for clock skew, chosen by
-- the pod) has passed on its own clock. Its error aborts the transaction.
--
-- Error codes (SQLSTATE), after 00009's:
--   FO008 past the statement's deadline: nothing of the batch committed

-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION commit_before(p_deadline timestamptz) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF clock_timestamp() >= p_deadline THEN
        RAISE EXCEPTION 'past the deadline % of this transaction', p_deadline USING ERRCODE = 'FO008';
    END IF;
END $$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION commit_before(timestamptz);
