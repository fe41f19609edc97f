"""Silver layer: pure validation, de-duplication and enrichment transforms."""
