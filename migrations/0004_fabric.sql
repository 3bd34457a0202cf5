-- The fabric: drained hosts, virtual IPs and agents' BGP reports.

-- A drained host keeps its sessions and pods but announces nothing and holds no VIP.
ALTER TABLE hosts ADD COLUMN drained BIGINT NOT NULL DEFAULT 0;

-- A virtual IP: one healthy host among those allowed holds it (answers for it, announces it).
-- `hosts` (a JSON list of names) or `group_path` says who may; `holder` is who does.
CREATE TABLE vips (
    address TEXT PRIMARY KEY,
    hosts TEXT NOT NULL,
    group_path TEXT,
    holder TEXT,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

-- The agent's last BGP report (sessions, announced prefixes, VIPs configured), as JSON.
ALTER TABLE node_states ADD COLUMN fabric TEXT;
