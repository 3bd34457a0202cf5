-- The named ports of an endpoint (a pod's container ports with a name), as JSON
-- [{"name", "port", "protocol"}]: what NetworkPolicy ports given by name resolve to.
ALTER TABLE endpoints ADD COLUMN named_ports TEXT NOT NULL DEFAULT '[]';
