"""Traffic from elsewhere: HAR import, probe, the pytest plugin, Parquet export."""
