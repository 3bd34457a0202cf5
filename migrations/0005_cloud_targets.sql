-- Where a VPC route to a host's group may point when the host is its gateway: its EC2 instance
-- (`i-…`) or network interface (`eni-…`).
ALTER TABLE hosts ADD COLUMN cloud_target TEXT;
