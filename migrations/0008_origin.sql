-- Who made a host or tenant: `api` (REST, CLI, the topology document) or `kubernetes` (the
-- operator, from a Node or Namespace). The operator changes and removes only its own; REST
-- refuses to change what Kubernetes manages.
ALTER TABLE hosts ADD COLUMN origin TEXT NOT NULL DEFAULT 'api';
ALTER TABLE tenants ADD COLUMN origin TEXT NOT NULL DEFAULT 'api';
