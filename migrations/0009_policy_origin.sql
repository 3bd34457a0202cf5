-- Who made a policy: `api` or `kubernetes` (the operator, from a NetworkPolicy). REST refuses to
-- change or delete what Kubernetes manages, and the operator never touches the API's.
ALTER TABLE policies ADD COLUMN origin TEXT NOT NULL DEFAULT 'api';
