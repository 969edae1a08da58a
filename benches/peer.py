"""The benchmark's peer: runs benches/peer.sql in DuckDB (the Python `duckdb` package).

    python3 benches/peer.py LOG OUT_DIR

LOG is a Parquet file or a glob; OUT_DIR receives sessions.parquet, violations.parquet and
invoice_lines.parquet. Prints the wall time in seconds on stdout.
"""

import os
import sys
import time

import duckdb


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: peer.py LOG OUT_DIR")
    log, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    sql = open(os.path.join(os.path.dirname(__file__), "peer.sql")).read()
    started = time.monotonic()
    con = duckdb.connect()
    con.execute("SET VARIABLE input = ?", [log])
    con.execute("SET VARIABLE out = ?", [out])
    con.execute(sql)
    print(f"{time.monotonic() - started:.3f}")


if __name__ == "__main__":
    main()
