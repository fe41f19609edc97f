"""Everything that runs: config, Spark session, broker, streaming queries, CLI."""
