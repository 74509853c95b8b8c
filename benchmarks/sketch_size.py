"""What the distinct-client sketches add to a store, per day, on the realistic generators.

    .venv/bin/python benchmarks/sketch_size.py [--pings 50000] [--days 3] [--data DIR]

For each family (legacy pings of `synth.generate_store(heavy=False)`, Glean pings of
`synth_glean.generate_glean_store`), `fill` writes the days into a fresh SQLite store and a
Parquet folder; then, per day, the bytes of the rows' stats and dimensions (as stored: JSON
text) against the bytes of their sketches, and each store's size with the sketches and with
them set to NULL (SQLite, after VACUUM; Parquet, the files rewritten without the sketch
columns). Goal (issue 16): the sketches add at most 40% to a store's size per day.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
from datetime import date, timedelta
from pathlib import Path

GOAL = 0.40
FIRST = date(2025, 6, 2)


def generated(data: Path, family: str, pings: int, days: int) -> Path:
    root = data / f"sketch-size-{family}-{pings}-{days}"
    marker = root / "_DONE"
    if not marker.exists():
        last = FIRST + timedelta(days=days - 1)
        print(f"generating {days} days of {pings:,} {family} pings in {root} ...", flush=True)
        if family == "glean":
            from crash_rate_aggregates.synth_glean import generate_glean_store

            generate_glean_store(root, FIRST, last, pings, seed=7)
        else:
            from crash_rate_aggregates.synth import generate_store

            generate_store(root, FIRST, last, pings, seed=7, heavy=False)
        marker.write_text("done")
    return root


def measure(store_dir: Path, family: str, days: int) -> list[float]:
    from crash_rate_aggregates.fill import FillSettings, fill
    from crash_rate_aggregates.stores.queries import sketch_columns, tables

    ratios = []
    with tempfile.TemporaryDirectory() as folder:
        db, parquet = Path(folder) / "s.db", Path(folder) / "parquet"
        last = FIRST + timedelta(days=days - 1)
        report = fill(FillSettings(str(store_dir), FIRST, last, f"sqlite:///{db}",
                                   parquet_url=str(parquet), family=family))
        assert not report.failed, report
        table, columns = tables(family).rows, sketch_columns(family)
        sketch_bytes = " + ".join(f"coalesce(length({c}), 0)" for c in columns)
        with sqlite3.connect(db) as connection:
            per_day = connection.execute(
                f"SELECT submission_date, count(*), sum(length(dimensions) + length(stats) + "
                f"length(activity_date) + length(submission_date)), sum({sketch_bytes}) "
                f"FROM {table} GROUP BY 1 ORDER BY 1").fetchall()
        print(f"{family}:")
        print(f"  {'date':10}  {'rows':>7}  {'row bytes':>11}  {'sketch bytes':>12}  added")
        for day, rows, row_bytes, added in per_day:
            ratio = added / row_bytes
            ratios.append(ratio)
            print(f"  {day}  {rows:7,}  {row_bytes:11,}  {added:12,}  {ratio:6.1%}")
        with_sketches = _vacuumed_size(db)
        with sqlite3.connect(db) as connection:
            connection.execute(f"UPDATE {table} SET {', '.join(f'{c} = NULL' for c in columns)}")
        without = _vacuumed_size(db)
        ratios.append(with_sketches / without - 1)
        print(f"  SQLite file: {with_sketches:,} bytes, {without:,} without the sketches: "
              f"+{with_sketches / without - 1:.1%}")
        ratios.append(parquet_ratio(parquet, family, columns))
    return ratios


def _vacuumed_size(db: Path) -> int:
    """The file's size once compacted, its WAL folded in: both sides measured alike."""
    connection = sqlite3.connect(db)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.execute("VACUUM")
    finally:
        connection.close()
    return db.stat().st_size


def parquet_ratio(root: Path, family: str, columns: tuple[str, ...]) -> float:
    import pyarrow.parquet as pq

    from crash_rate_aggregates import families

    files = sorted((root / families.table(family)).glob("v1/submission_date=*/*.parquet"))
    with_sketches = sum(f.stat().st_size for f in files)
    without = 0
    with tempfile.TemporaryDirectory() as folder:
        for number, path in enumerate(files):
            table = pq.read_table(path).drop_columns(list(columns))
            out = Path(folder) / f"{number}.parquet"
            pq.write_table(table, out, compression="zstd")
            without += out.stat().st_size
    ratio = with_sketches / without - 1
    print(f"  Parquet files: {with_sketches:,} bytes, {without:,} without the sketch columns: "
          f"+{ratio:.1%}")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pings", type=int, default=50_000, help="pings a day")
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--data", type=Path, default=Path(__file__).parent / ".data")
    args = parser.parse_args()
    worst = 0.0
    for family in ("legacy", "glean"):
        store = generated(args.data, family, args.pings, args.days)
        worst = max(worst, *measure(store, family, args.days))
    met = worst <= GOAL
    print(f"  largest addition                 {worst:6.1%}  goal <= {GOAL:.0%}  "
          f"{'MET' if met else 'NOT MET'}")
    raise SystemExit(0 if met else 1)


if __name__ == "__main__":
    main()
