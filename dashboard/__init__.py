"""Live web dashboard over the lakehouse (reads through DuckDB); see server.py."""
