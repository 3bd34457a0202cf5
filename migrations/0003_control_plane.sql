-- The control plane: a change feed, a writer lease, replicas, and node status shared by them.

-- The feed's head: every writing transaction bumps it, which takes its row lock until commit,
-- so change records become visible in sequence order (a follower never skips one).
CREATE TABLE feed_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    -- Records at or below this sequence were compacted away.
    compacted BIGINT NOT NULL
);
INSERT INTO feed_head (id, seq, compacted) VALUES (1, 0, 0);

-- One record per change, written in the change's own transaction: "this object changed, read
-- it again". The records are the data; notifications only wake followers.
CREATE TABLE changes (
    seq BIGINT PRIMARY KEY,
    kind TEXT NOT NULL,
    object TEXT NOT NULL,
    revision BIGINT NOT NULL,
    at BIGINT NOT NULL
);

-- Singleton work (route publishers, the operator's writes, garbage collection) runs on the
-- holder of a lease; `token` grows at every change of holder (a fencing token).
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_ms BIGINT NOT NULL,
    token BIGINT NOT NULL
);

-- Controller replicas and their heartbeats.
CREATE TABLE replicas (
    id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_ms BIGINT NOT NULL
);

-- A node's generation is assigned here, once per distinct state, at the feed position of the
-- replica that assigned it; what its agent reported lives here too, for every replica to serve.
ALTER TABLE node_states ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE node_states ADD COLUMN applied BIGINT;
ALTER TABLE node_states ADD COLUMN last_error TEXT;
ALTER TABLE node_states ADD COLUMN last_seen BIGINT;
