-- Token lifecycle: optional expiry, a last-used time (written in batches, never per request),
-- scopes (the agents a token may see; NULL: every agent), and the revocation announced on the
-- change feed so that every worker refuses the token at once, even through a later outage.

ALTER TABLE api_tokens
    ADD COLUMN expires_at   timestamptz,
    ADD COLUMN last_used_at timestamptz,
    ADD COLUMN scopes       text[] CHECK (scopes IS NULL OR cardinality(scopes) > 0);

CREATE FUNCTION announce_token_revocation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The token's id, not its digest: the digest is all a worker needs to accept a token.
    PERFORM pg_notify('agentver_changes', json_build_object(
        'kind', 'token', 'token_id', NEW.id, 'revision', 0,
        'at', extract(epoch FROM clock_timestamp()))::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_tokens_announce_revocation
    AFTER UPDATE OF revoked_at ON api_tokens
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION announce_token_revocation();
