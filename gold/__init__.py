"""Gold layer: pure aggregate and alert transforms."""
