-- A VPC route call is recorded before it is made and confirmed once EC2 answered, so a crash or
-- a lost answer in between leaves a record the next pass settles from what the table holds
-- (never a route of ours taken for foreign, never a foreign one taken for ours).
ALTER TABLE cloud_routes ADD COLUMN confirmed BIGINT NOT NULL DEFAULT 1;
-- The target before an unanswered replace.
ALTER TABLE cloud_routes ADD COLUMN previous TEXT;
