"""Bronze layer: pure transforms from source records to the raw table schema."""
