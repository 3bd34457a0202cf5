-- Tessera store: one schema for SQLite and PostgreSQL (only portable SQL here).
CREATE TABLE topology (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL,
    spec TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE hosts (
    name TEXT PRIMARY KEY,
    group_path TEXT NOT NULL,
    ips TEXT NOT NULL,
    labels TEXT NOT NULL,
    pinned BIGINT NOT NULL DEFAULT 0,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX hosts_group ON hosts (group_path);

CREATE TABLE group_locks (
    path TEXT PRIMARY KEY
);

CREATE TABLE tenants (
    name TEXT PRIMARY KEY,
    labels TEXT NOT NULL,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE segments (
    tenant TEXT NOT NULL REFERENCES tenants (name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    labels TEXT NOT NULL,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, name)
);

CREATE TABLE blocks (
    cidr TEXT PRIMARY KEY,
    network TEXT NOT NULL,
    group_path TEXT NOT NULL,
    host TEXT REFERENCES hosts (name),
    tenant TEXT,
    segment TEXT,
    used BIGINT NOT NULL,
    capacity BIGINT NOT NULL,
    CHECK (used >= 0 AND used <= capacity),
    CHECK ((host IS NULL) = (tenant IS NULL) AND (host IS NULL) = (segment IS NULL))
);
CREATE INDEX blocks_group ON blocks (group_path, network);
CREATE INDEX blocks_owner ON blocks (host, tenant, segment);

CREATE TABLE endpoints (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants (name),
    segment TEXT NOT NULL,
    host TEXT NOT NULL REFERENCES hosts (name),
    labels TEXT NOT NULL,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    FOREIGN KEY (tenant, segment) REFERENCES segments (tenant, name)
);
CREATE INDEX endpoints_host ON endpoints (host);
CREATE INDEX endpoints_tenant ON endpoints (tenant, segment);

CREATE TABLE endpoint_addresses (
    address TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    block TEXT NOT NULL REFERENCES blocks (cidr)
);
CREATE INDEX endpoint_addresses_endpoint ON endpoint_addresses (endpoint);
CREATE INDEX endpoint_addresses_block ON endpoint_addresses (block);

CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('admin', 'read', 'tenant')),
    tenant TEXT,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    CHECK ((role = 'tenant') = (tenant IS NOT NULL))
);
