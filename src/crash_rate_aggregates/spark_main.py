"""The file to give spark-submit: it runs the `crash-aggregates` command line.

    spark-submit --master yarn --archives env.tar.gz#env \\
        "$(python -c 'import crash_rate_aggregates.spark_main as m; print(m.__file__)')" \\
        fill --engine spark --input s3://bucket/pings --db postgresql://...

See docs/spark.md.
"""

from crash_rate_aggregates.cli import main

if __name__ == "__main__":
    main()
