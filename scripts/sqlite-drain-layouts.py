#!/usr/bin/env python3
"""What SQLite itself charges per message for four layouts of pending rows.

Runs the `sqlite3` shell (no FastChat code) on a fresh database in /tmp for
each layout: stores ROWS rows (180-byte payloads, a 16-character key) for
RECIPIENTS recipients in seq order, 1,000 per transaction, then drains them
as the offline bench does: 64 rows of each recipient in turn, each page read
and then acknowledged, 1,000 rows per transaction. Prints the user + system
CPU seconds per row of each phase (WAL, synchronous=NORMAL: no sync cost,
64 MiB page cache as SqliteStore has).

  rowid      rows keyed by seq (as SqliteStore keeps them); an
             acknowledgement deletes its rows one by one
  clustered  rows keyed by (recipient, seq) (WITHOUT ROWID); an
             acknowledgement deletes the recipient's range
  cursor     rows keyed by seq; an acknowledgement moves the recipient's
             cursor, and a seq range goes in one DELETE once every
             recipient is past it
  segments   rows keyed by seq in tables of SEGMENT rows each (by seq); an
             acknowledgement moves the recipient's cursor, and a table is
             dropped whole once every recipient is past its last seq
  reads      the drain's reads alone (a floor for any layout keyed by seq)

  scripts/sqlite-drain-layouts.py [ROWS [RECIPIENTS]]   (default 1000000 500)

LAYOUTS="rowid segments" (for example) runs only those; PRAGMAS="PRAGMA
secure_delete=FAST;" adds pragmas to every connection.

docs/performance.md, "The offline phases: what they wait on" and "Debian's
`secure_delete`, and pending rows in tables dropped whole", show its output.
"""
import os
import resource
import subprocess
import sys
import tempfile

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
RECIPIENTS = int(sys.argv[2]) if len(sys.argv) > 2 else 500
TX = 1000
PAGE = 64
SEGMENT = 64000  # rows per table in the segments layout (a multiple of TX)
LAYOUTS = os.environ.get("LAYOUTS", "rowid clustered cursor segments reads").split()
PRAGMAS = ("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-65536; "
           + os.environ.get("PRAGMAS", ""))


def store_sql(layout):
    if layout == "clustered":
        table = ("CREATE TABLE p(recipient INTEGER NOT NULL, seq INTEGER NOT NULL, key TEXT NOT NULL, "
                 "payload BLOB NOT NULL, PRIMARY KEY(recipient, seq)) WITHOUT ROWID;")
    else:
        table = ("CREATE TABLE p(seq INTEGER PRIMARY KEY, recipient INTEGER NOT NULL, key TEXT NOT NULL, "
                 "payload BLOB NOT NULL);")
    lines = [PRAGMAS]
    if layout == "segments":
        for seg in range((ROWS + SEGMENT - 1) // SEGMENT):
            lines.append(table.replace("TABLE p(", f"TABLE p{seg}("))
    else:
        lines.append(table)
    for first in range(1, ROWS + 1, TX):
        last = min(first + TX - 1, ROWS)
        into = f"p{(first - 1) // SEGMENT}" if layout == "segments" else "p"
        lines.append(f"BEGIN; INSERT INTO {into}(seq, recipient, key, payload) SELECT value, value % {RECIPIENTS}, "
                     f"hex(randomblob(8)), randomblob(180) FROM generate_series({first}, {last}); COMMIT;")
    return "\n".join(lines)


def drain_sql(layout):
    # Recipient r's rows are seqs r + RECIPIENTS * j (j >= 1 for r = 0).
    lines = [PRAGMAS, "CREATE TABLE cursors(recipient INTEGER PRIMARY KEY, acked INTEGER NOT NULL);", "BEGIN;"]
    per = ROWS // RECIPIENTS + 1
    in_tx = 0
    dropped = 0  # segments: tables below this one are gone
    for k in range(0, per, PAGE):
        last = min(k + PAGE, per) - 1
        for r in range(RECIPIENTS):
            seqs = f"SELECT {r} + {RECIPIENTS} * value FROM generate_series({k}, {last})"
            top = r + RECIPIENTS * last
            if layout == "clustered":
                lines.append(f"SELECT sum(length(payload)) FROM p WHERE recipient = {r} AND seq <= {top};")
                lines.append(f"DELETE FROM p WHERE recipient = {r} AND seq <= {top};")
            elif layout == "segments":
                lo = max(r + RECIPIENTS * k, 1)
                for seg in range((lo - 1) // SEGMENT, min((top - 1) // SEGMENT, (ROWS - 1) // SEGMENT) + 1):
                    if seg >= dropped:
                        lines.append(f"SELECT sum(length(payload)) FROM p{seg} WHERE seq IN ({seqs});")
                lines.append(f"INSERT OR REPLACE INTO cursors VALUES ({r}, {top});")
            else:
                lines.append(f"SELECT sum(length(payload)) FROM p WHERE seq IN ({seqs});")
                if layout == "rowid":
                    lines.append(f"DELETE FROM p WHERE seq IN ({seqs});")
                elif layout == "cursor":
                    lines.append(f"INSERT OR REPLACE INTO cursors VALUES ({r}, {top});")
            in_tx += PAGE
            if in_tx >= TX:
                lines.append("COMMIT; BEGIN;")
                in_tx = 0
        if layout == "cursor":
            # Every recipient has acknowledged every seq up to here.
            lines.append(f"DELETE FROM p WHERE seq <= {RECIPIENTS * last + RECIPIENTS - 1};")
        if layout == "segments":
            # Every recipient has acknowledged every seq up to here.
            while (dropped < (ROWS + SEGMENT - 1) // SEGMENT
                   and min((dropped + 1) * SEGMENT, ROWS) <= RECIPIENTS * last + RECIPIENTS - 1):
                lines.append(f"DROP TABLE p{dropped};")
                dropped += 1
    lines.append("COMMIT;")
    return "\n".join(lines)


def run(db, sql):
    """CPU seconds (user + system) the sqlite3 shell spends on `sql`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["sqlite3", db], input=sql.encode(), stdout=subprocess.DEVNULL, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main():
    print(f"sqlite-drain-layouts: {ROWS} rows for {RECIPIENTS} recipients; CPU µs per row")
    with tempfile.TemporaryDirectory(prefix="fastchat-layouts.") as tmp:
        for layout in LAYOUTS:
            db = os.path.join(tmp, layout + ".db")
            stored = run(db, store_sql(layout))
            drained = run(db, drain_sql(layout))
            left = 0
            out = subprocess.run(["sqlite3", db, "SELECT name FROM sqlite_schema WHERE type = 'table' AND name GLOB 'p*'"],
                                 capture_output=True, check=True)
            for name in out.stdout.decode().split():
                n = subprocess.run(["sqlite3", db, f"SELECT count(*) FROM {name}"], capture_output=True, check=True)
                left += int(n.stdout.decode().strip())
            print(f"  {layout:10} store {stored * 1e6 / ROWS:6.2f}   drain {drained * 1e6 / ROWS:6.2f}"
                  f"   rows left {left}")
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(db + suffix):
                    os.remove(db + suffix)


if __name__ == "__main__":
    main()
