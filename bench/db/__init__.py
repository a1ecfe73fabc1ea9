"""The results registry: the database, claims and leases, records, provenance."""
