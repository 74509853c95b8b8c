"""The JSON API's answers, as Pydantic models: they make the OpenAPI description and check
every answer against it. Numbers that are infinite or undefined are null."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Number = float | None


class ErrorDetail(BaseModel):
    status: int = Field(description="The HTTP status, repeated.")
    message: str = Field(description="What went wrong, in one line.")


class ErrorBody(BaseModel):
    """The one shape of every error: bad parameters, unknown dimensions, 404s, timeouts,
    store errors."""

    error: ErrorDetail


class Selection(BaseModel):
    filters: dict[str, str] = Field(description="Dimension values the aggregates must have.")
    first: str | None = Field(description="First date (YYYY-MM-DD), inclusive.")
    last: str | None = Field(description="Last date (YYYY-MM-DD), inclusive.")
    date_kind: Literal["submission", "activity"]


class Share(BaseModel):
    """A share of clients, as a fraction of 1, with its 95% interval (Wilson's)."""

    value: float
    lower: float
    upper: float


class RateFigure(BaseModel):
    """One crash type's rate per 1,000 usage hours with its 95% interval."""

    crashes: float
    rate: Number = Field(description="Crashes per 1,000 usage hours; null without usage.")
    lower: Number
    upper: Number
    method: Literal["exact", "none"]
    enough_usage: bool = Field(description="False when usage is too low to trust the rate.")
    crashing_clients: int = Field(description="Distinct clients with at least one such crash.")
    incidence: Share | None = Field(description="Crashing clients / clients; null without "
                                                "clients.")


class RateRow(BaseModel):
    date: str | None = Field(description="The date of the row (with per_date), else null.")
    dimensions: dict[str, str | None] = Field(description="The group's dimension values.")
    usage_hours: float
    client_count: float = Field(description="The sum of the aggregates' client counts: a "
                                            "client in two aggregates counts twice.")
    clients: int = Field(description="Distinct clients (merged sketches): each counts once.")
    crash_free_users: Share | None = Field(description="1 - the main-crash incidence.")
    rates: dict[str, RateFigure] = Field(description="Per crash type.")


class RatesQuery(Selection):
    by: list[str]
    per_date: bool


class Rates(BaseModel):
    family: str = Field(description="The ping family read: legacy or glean.")
    query: RatesQuery
    rows: list[RateRow]


class ChannelSeries(BaseModel):
    channel: str | None
    series: list[RateRow]
    latest: RateRow


class Overview(BaseModel):
    family: str = Field(description="The ping family read: legacy or glean.")
    selection: Selection
    crash_types: list[str] = Field(description=(
        "The family's crash types, in order (Glean: startup_crashes, a part of main_crashes, "
        "last)."))
    crash_labels: dict[str, str]
    channels: list[ChannelSeries]


class RateOut(BaseModel):
    crash: str
    crashes: float
    usage_hours: float
    clients: float
    rate: Number
    lower: Number
    upper: Number
    method: Literal["exact", "none"]
    enough_usage: bool


class ComparisonOut(BaseModel):
    crash: str
    candidate: RateOut
    baseline: RateOut
    ratio: Number = Field(description="Candidate rate over baseline rate; null when unknown "
                                      "or infinite.")
    lower: Number
    upper: Number = Field(description="Upper end of the ratio's 95% interval; null when "
                                      "unbounded.")
    p_value: Number
    verdict: Literal["regression", "improvement", "no significant change",
                     "no significant change (few crashing clients: not a clean bill)",
                     "not enough usage yet"]


class IncidenceOut(BaseModel):
    """One crash type's share of clients that crashed, candidate against baseline."""

    crash: str
    candidate: Share | None
    baseline: Share | None
    candidate_crashing: int
    candidate_clients: int
    baseline_crashing: int
    baseline_clients: int
    ratio: Number = Field(description="Candidate incidence over baseline incidence.")
    lower: Number
    upper: Number
    p_value: Number
    verdict: Literal["regression", "improvement", "no significant change", "no clients",
                     "no crashing clients"]


class Comparison(BaseModel):
    family: str = Field(description="The ping family read: legacy or glean.")
    dimension: str
    candidate: str
    baseline: str
    channel: str | None
    candidate_dates: list[str] | None
    baseline_dates: list[str] | None
    results: list[ComparisonOut]
    incidence: list[IncidenceOut] = Field(description="Per crash type, the share of distinct "
                                                      "clients with at least one crash.")
    regression: bool
    min_usage_hours: float
    days_since_release: int | None


class Dimensions(BaseModel):
    family: str = Field(description="The ping family read: legacy or glean.")
    dimensions: list[str]


class DimensionValues(BaseModel):
    family: str = Field(description="The ping family read: legacy or glean.")
    dimension: str
    first: str | None
    last: str | None
    values: list[str]


class Run(BaseModel):
    run_id: str
    submission_date: str
    status: str
    started_at: str
    duration_seconds: float
    rows_written: int
    input_url: str
    product_version: str
    error: str | None
    counters: dict[str, int] = Field(description=(
        "Every count of the run table: the per-line counters (docs/rules.md), `undated` "
        "(run-wide) and `corrupt_files`."))


class Runs(BaseModel):
    family: str = Field(description="The ping family read: legacy or glean.")
    first: str | None
    last: str | None
    runs: list[Run]


class HealthDay(BaseModel):
    submission_date: str
    runs: int = Field(description="How many runs wrote this date (the latest counts).")
    latest: Run
    lines_read: int
    processed_share: Number


class Health(BaseModel):
    family: str = Field(description="The ping family read: legacy or glean.")
    first: str | None
    last: str | None
    counters: list[str] = Field(description="The per-line counters, in order.")
    run_counters: list[str] = Field(description="The other counts of a run.")
    days: list[HealthDay]
