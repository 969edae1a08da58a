"""Run convbill on a Spark cluster: one shard per task, then one merge.

    spark-submit integrations/spark/convbill_spark.py \
        --input s3://logs/messages --format parquet \
        --rates /dbfs/convbill/rates.toml --shards 64 \
        --work /dbfs/convbill/work/2025-06 --output s3://billing/convbill/2025-06 \
        --convbill /dbfs/convbill/bin/convbill

1. Layout. Spark reads the log (any source it reads: Parquet, Delta, Iceberg, a table) and
   writes it to `WORK/input/convbill_bucket=I/` by `pmod(xxhash64(account_id), N)`: the one
   shuffle of the job. Spark's commit protocol puts the layout in place whole.
2. Shards. N tasks, task I running `convbill run --shard I/N` on the layout, which reads only
   its own bucket's folder. Each task writes its shard's folder on the executor's local disk,
   copies it beside `WORK/shards/` and renames it into place as `WORK/shards/shard-I` (a
   rename is atomic): a task attempt that dies leaves only a hidden attempt folder, never a
   partial shard, and a second attempt of the same shard finds the first one's folder whole
   and keeps it (convbill writes the same bytes for the same input).
3. Merge. The driver runs `convbill merge` on the N folders the successful tasks returned:
   `WORK/merged/` is the same bytes as one run over the whole log.
4. Outputs. The merged tables are read back as Spark DataFrames and written under `--output`
   (`--output-format parquet` or `delta`), each table by Spark's committer, replaced whole.

WORK must be a path every executor and the driver see as a file system (the local disk in
local mode, `/dbfs/...` on Databricks, an NFS or FUSE mount elsewhere). The convbill binary
must be executable on the executors and the driver: a path they share (`--convbill`), or a file
shipped with `spark-submit --files .../convbill` (then `--convbill convbill`, found with
`SparkFiles`). The rate card likewise (`--files rates.toml` and `--rates rates.toml`).
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

BUCKET = "convbill_bucket"
# Tables of the merged folder returned as DataFrames (those present).
TABLES = [
    "sessions",
    "violations",
    "invoice_lines",
    "invoices",
    "meta_units",
    "meta_cost_lines",
    "rejects",
]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="the log: a path, or a table name with --format table")
    p.add_argument("--format", default="parquet", help="parquet, delta, iceberg, ... or table")
    p.add_argument("--rates", help="the rate card (a path the executors see, or a --files name); default: convbill's built-in card")
    p.add_argument("--shards", type=int, required=True, help="N: shards (tasks) and buckets")
    p.add_argument("--work", required=True, help="a folder every executor and the driver see")
    p.add_argument("--output", required=True, help="where the tables are written")
    p.add_argument("--output-format", default="parquet", choices=["parquet", "delta"])
    p.add_argument("--convbill", default="convbill", help="the binary: a shared path or a --files name")
    p.add_argument("--partition-rows", type=int, default=None, help="convbill's --partition-rows per task")
    p.add_argument("--memory-rows", type=int, default=None, help="convbill's --memory-rows per task")
    p.add_argument("--rejects", action="store_true", help="set bad rows aside instead of failing")
    p.add_argument("--master", default=None, help="only outside spark-submit, e.g. local[2]")
    return p.parse_args(argv)


def resolve(name, command=False):
    """A path as given, or the local copy of a file shipped with --files (or, for a command,
    found on the PATH)."""
    if os.path.exists(name):
        return os.path.abspath(name)
    from pyspark import SparkFiles

    shipped = SparkFiles.get(os.path.basename(name))
    if os.path.exists(shipped):
        return shipped
    which = shutil.which(name) if command else None
    if which:
        return which
    raise FileNotFoundError(f"{name}: not a path, a file shipped with --files, or a command")


def executable(name):
    path = resolve(name, command=True)
    if not os.access(path, os.X_OK):
        if os.path.exists(name):
            raise PermissionError(f"{path}: the convbill binary is not executable")
        # SparkFiles copies drop the mode bit on some clusters.
        os.chmod(path, 0o755)
    return path


def file_uri(path):
    """A local path as a URI for Spark, so that it is not taken for the cluster's default file
    system (HDFS, DBFS)."""
    return "file://" + os.path.abspath(path)


def lay_out(spark, args):
    """Step 1: the log by bucket under WORK/input, replaced whole. Returns the row count."""
    from pyspark.sql import functions as F

    if args.format == "table":
        log = spark.table(args.input)
    else:
        log = spark.read.format(args.format).load(args.input)
    bucket = F.expr(f"pmod(xxhash64(account_id), {args.shards})").cast("int")
    laid = log.withColumn(BUCKET, bucket).repartition(args.shards, BUCKET)
    (
        laid.write.mode("overwrite")
        .partitionBy(BUCKET)
        .option("compression", "zstd")
        .parquet(file_uri(os.path.join(args.work, "input")))
    )


def test_fault(shard, stage, work):
    """Tests only: CONVBILL_SPARK_TEST_KILL=I:STAGE[,J:STAGE...] kills the first attempt of
    shard I's task at STAGE (`running`: convbill and the Python worker, mid-run; `publishing`:
    the worker, with part of the shard copied; `published`: the worker, with the shard in
    place), leaving WORK/.killed-I-STAGE behind."""
    wanted = os.environ.get("CONVBILL_SPARK_TEST_KILL", "").split(",")
    if f"{shard}:{stage}" not in wanted:
        return False
    from pyspark import TaskContext

    if TaskContext.get().attemptNumber() != 0:
        return False
    with open(os.path.join(work, f".killed-{shard}-{stage}"), "w") as marker:
        marker.write("killed\n")
    return True


def run_shard(index, settings):
    """Step 2, on an executor: shard `index`'s folder at WORK/shards/shard-I; returns it."""
    from pyspark import TaskContext

    work = settings["work"]
    shards_dir = os.path.join(work, "shards")
    final = os.path.join(shards_dir, f"shard-{index}")
    os.makedirs(shards_dir, exist_ok=True)
    context = TaskContext.get()
    attempt = f"{context.stageId()}-{context.partitionId()}-{context.attemptNumber()}"
    local = tempfile.mkdtemp(prefix=f"convbill-shard-{index}-")
    try:
        out = os.path.join(local, "out")
        command = [
            executable(settings["convbill"]),
            "run",
            "--quiet",
            "--input", os.path.join(work, "input"),
            "--shard", f"{index}/{settings['shards']}",
            "--out", out,
        ]
        if settings["rates"]:
            command += ["--rates", resolve(settings["rates"])]
        if settings["partition_rows"]:
            command += ["--partition-rows", str(settings["partition_rows"])]
        if settings["memory_rows"] is not None:
            command += ["--memory-rows", str(settings["memory_rows"])]
        if settings["rejects"]:
            command.append("--rejects")
        process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        if test_fault(index, "running", work):
            time.sleep(0.2)
            process.kill()
            os.kill(os.getpid(), signal.SIGKILL)
        _, stderr = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(
                f"convbill failed on shard {index}/{settings['shards']} with exit code "
                f"{process.returncode}: {stderr.strip()}"
            )
        # Into place: a hidden attempt folder beside the shards, then one rename.
        staging = os.path.join(shards_dir, f".attempt-{index}-{attempt}")
        shutil.rmtree(staging, ignore_errors=True)
        if test_fault(index, "publishing", work):
            os.makedirs(staging)
            shutil.copy(os.path.join(out, "manifest.json"), staging)
            os.kill(os.getpid(), signal.SIGKILL)
        shutil.copytree(out, staging)
        try:
            os.rename(staging, final)
        except OSError:
            # An earlier attempt of this shard put its folder in place, whole: the same bytes.
            if not os.path.exists(os.path.join(final, "manifest.json")):
                raise
            shutil.rmtree(staging, ignore_errors=True)
        if test_fault(index, "published", work):
            os.kill(os.getpid(), signal.SIGKILL)
        return index, final
    finally:
        shutil.rmtree(local, ignore_errors=True)


def table_frame(spark, path):
    """A table of the merged folder as a DataFrame. Spark's timestamps hold microseconds:
    convbill's nanosecond times become timestamps cut to the microsecond (the merged folder
    keeps the nanoseconds)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    nanos = [
        field.name
        for field in pq.read_schema(path)
        if pa.types.is_timestamp(field.type) and field.type.unit == "ns"
    ]
    frame = spark.read.parquet(file_uri(path))
    for name in nanos:
        frame = frame.withColumn(name, F.expr(f"timestamp_micros(div(`{name}`, 1000))"))
    return frame


def check_card(convbill, rates):
    """Runs convbill once on an empty log with the card: a card it refuses fails the job here,
    with convbill's message, instead of in every task after the shuffle."""
    if not rates:
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    card = resolve(rates)
    with tempfile.TemporaryDirectory(prefix="convbill-card-") as folder:
        text = pa.string()
        empty = pa.table(
            {
                "message_id": pa.array([], text),
                "account_id": pa.array([], text),
                "channel": pa.array([], text),
                "business_id": pa.array([], text),
                "user_id": pa.array([], text),
                "direction": pa.array([], text),
                "timestamp": pa.array([], pa.timestamp("us", tz="UTC")),
            }
        )
        log = os.path.join(folder, "empty.parquet")
        pq.write_table(empty, log)
        checked = subprocess.run(
            [convbill, "run", "--quiet", "--input", log, "--rates", card,
             "--out", os.path.join(folder, "out")],
            stderr=subprocess.PIPE,
            text=True,
        )
        if checked.returncode != 0:
            raise RuntimeError(
                f"convbill refuses the rate card {rates} (exit code {checked.returncode}): "
                f"{checked.stderr.strip()}"
            )


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("convbill")
    if args.master:
        builder = builder.master(args.master)
    spark = builder.getOrCreate()
    # convbill reads timestamps of any unit but not INT96, Spark's default for Parquet.
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    sc = spark.sparkContext
    # What no retry can mend is refused before the shuffle: a card or binary that is missing,
    # a card convbill refuses.
    check_card(executable(args.convbill), args.rates)
    timings = {}

    started = time.monotonic()
    lay_out(spark, args)
    timings["layout_seconds"] = round(time.monotonic() - started, 3)

    # Folders of earlier runs of this job (or attempts of this one) are not this run's.
    shards_dir = os.path.join(args.work, "shards")
    shutil.rmtree(shards_dir, ignore_errors=True)
    settings = {
        "work": os.path.abspath(args.work),
        "shards": args.shards,
        "rates": args.rates,
        "convbill": args.convbill,
        "partition_rows": args.partition_rows,
        "memory_rows": args.memory_rows,
        "rejects": args.rejects,
    }
    started = time.monotonic()
    done = (
        sc.parallelize(range(args.shards), args.shards)
        .map(lambda index: run_shard(index, settings))
        .collect()
    )
    timings["shards_seconds"] = round(time.monotonic() - started, 3)
    folders = [folder for _, folder in sorted(done)]
    if sorted(index for index, _ in done) != list(range(args.shards)):
        raise RuntimeError(f"the tasks returned shards {sorted(i for i, _ in done)}")

    started = time.monotonic()
    merged = os.path.join(os.path.abspath(args.work), "merged")
    rates = ["--rates", resolve(args.rates)] if args.rates else []
    subprocess.run(
        [executable(args.convbill), "merge", "--quiet", "--out", merged] + rates + folders,
        check=True,
    )
    timings["merge_seconds"] = round(time.monotonic() - started, 3)

    # convbill writes nanoseconds, which Spark cannot hold: read them as numbers (see
    # table_frame), only now, so that the log itself is read as Spark reads it.
    spark.conf.set("spark.sql.legacy.parquet.nanosAsLong", "true")
    started = time.monotonic()
    written = {}
    for table in TABLES:
        path = os.path.join(merged, f"{table}.parquet")
        if not os.path.exists(path):
            continue
        frame = table_frame(spark, path)
        target = os.path.join(args.output, table)
        frame.write.mode("overwrite").format(args.output_format).save(target)
        written[table] = target
    timings["outputs_seconds"] = round(time.monotonic() - started, 3)
    print(json.dumps({"merged": merged, "tables": written, "timings": timings}))
    spark.stop()


if __name__ == "__main__":
    main()
