"""Airflow example: the daily crash-aggregates fill, then the watchdog (docs/operations.md).

Copy into the DAGs folder of an Airflow 2.4+ or 3 deployment whose workers have the package
installed (here in /opt/crash-aggregates/venv) and the settings file in place. Each DAG run
fills one submission date: its data interval's start, `{{ ds }}`, so the run that starts at
02:30 UTC on March 15 fills March 14.

Backfill: either let Airflow run one DAG run per date,

    airflow dags backfill -s 2024-01-01 -e 2024-01-31 crash_aggregates         # Airflow 2
    airflow backfill create --dag-id crash_aggregates \\
        --from-date 2024-01-01 --to-date 2024-01-31                             # Airflow 3

(max_active_runs bounds how many dates run at once), or run one command outside Airflow, which
shares one pool of workers between dates:

    crash-aggregates fill --from 2024-01-01 --to 2024-01-31 --skip-existing --parallel-dates 2

A cleared task reruns its date and replaces its rows (no --skip-existing in the task, so that
clearing a task is the way to redo a date).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow import DAG

try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:  # Airflow 2
    from airflow.operators.bash import BashOperator

CLI = "/opt/crash-aggregates/venv/bin/crash-aggregates"
ENV = {"CRASH_AGGREGATES_CONFIG": "/etc/crash-aggregates/crash-aggregates.toml"}

with DAG(
    dag_id="crash_aggregates",
    description="Daily crash-rate aggregates from telemetry pings",
    schedule="30 2 * * *",  # 02:30 UTC; the run's {{ ds }} is the day before
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,  # True: a newly enabled DAG backfills every date since start_date
    max_active_runs=2,
    default_args={"retries": 2, "retry_delay": timedelta(hours=1), "owner": "telemetry"},
    tags=["telemetry", "crash-rates"],
) as dag:
    fill = BashOperator(
        task_id="fill",
        # one JSON object per date in the task log; exit status 1 when the date failed
        bash_command=f"{CLI} fill --from {{{{ ds }}}} --to {{{{ ds }}}} --log-format json",
        env=ENV,
        append_env=True,
        execution_timeout=timedelta(hours=6),
    )
    watchdog = BashOperator(
        task_id="watchdog",
        # the 7 dates ending with this run's date; exit status 1 (task failed, and the alert
        # sent) when a check fails
        bash_command=f"{CLI} watchdog --to {{{{ ds }}}}",
        env=ENV,
        append_env=True,
        retries=0,
    )
    fill.set_downstream(watchdog)
