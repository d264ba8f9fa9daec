"""Leader election on a Lease, so two or more replicas can run and exactly one scans."""
