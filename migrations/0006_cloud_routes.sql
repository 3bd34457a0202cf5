-- The VPC routes Tessera wrote, per route table: only these are ever changed or deleted; a route
-- found pointing elsewhere than recorded was changed out of band (drift).
CREATE TABLE cloud_routes (
    route_table TEXT NOT NULL,
    destination TEXT NOT NULL,
    -- An instance (i-…) or network interface (eni-…) id.
    target TEXT NOT NULL,
    PRIMARY KEY (route_table, destination)
);
