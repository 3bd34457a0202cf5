-- Distribution: node-scoped tokens, stored policies, and each node's state generation.

-- Tokens gain the `node` role (an agent's token, limited to its own node).
CREATE TABLE tokens_v2 (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('admin', 'read', 'tenant', 'node')),
    tenant TEXT,
    node TEXT,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    CHECK ((role = 'tenant') = (tenant IS NOT NULL)),
    CHECK ((role = 'node') = (node IS NOT NULL))
);
INSERT INTO tokens_v2 (id, hash, role, tenant, node, name, created_at)
    SELECT id, hash, role, tenant, NULL, name, created_at FROM tokens;
DROP TABLE tokens;
ALTER TABLE tokens_v2 RENAME TO tokens;

-- Policies as their source documents (JSON), keyed by the policy id the engine gives them.
CREATE TABLE policies (
    id TEXT PRIMARY KEY,
    tenant TEXT,
    document TEXT NOT NULL,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

-- The generation of each node's state grows whenever its content (named by digest) changes;
-- kept here so that it keeps growing across controller restarts.
CREATE TABLE node_states (
    host TEXT PRIMARY KEY,
    generation BIGINT NOT NULL,
    digest TEXT NOT NULL
);
