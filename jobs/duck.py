"""DuckDB with the delta extension loaded from the duckdb-extension-delta wheel (no network)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import duckdb

logger = logging.getLogger(__name__)


class DuckSetupError(RuntimeError):
    """The delta extension is not where the pinned wheel puts it."""


def delta_extension_path() -> Path:
    """The signed extension binary shipped inside the duckdb-extension-delta package."""
    import duckdb_extension_delta

    root = Path(duckdb_extension_delta.__file__).parent
    path = root / "extensions" / f"v{duckdb.__version__}" / "delta.duckdb_extension"
    if not path.exists():
        found = sorted(str(p.relative_to(root)) for p in root.rglob("*.duckdb_extension"))
        raise DuckSetupError(
            f"no delta extension for duckdb {duckdb.__version__} in {root} (found {found}); "
            "duckdb and duckdb-extension-delta must have the same version: run scripts/setup.sh"
        )
    return path


def connect(database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with `delta_scan` available; never downloads anything."""
    con = duckdb.connect(database, config={"autoinstall_known_extensions": "false",
                                           "autoload_known_extensions": "false"})
    con.execute(f"INSTALL '{delta_extension_path()}'")
    con.execute("LOAD delta")
    return con


def main() -> None:
    parser = argparse.ArgumentParser(description="check that DuckDB loads the delta extension")
    parser.add_argument("--check", action="store_true")
    parser.parse_args()
    con = connect()
    loaded = con.execute(
        "SELECT loaded FROM duckdb_extensions() WHERE extension_name = 'delta'"
    ).fetchone()
    if not loaded or not loaded[0]:
        raise SystemExit("delta extension did not load")
    print(f"duckdb {duckdb.__version__}: delta extension loaded from {delta_extension_path()}")


if __name__ == "__main__":
    main()
