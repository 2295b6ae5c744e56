"""Data-quality gates (Great Expectations through SQL on the warehouse: DuckDB, or PostgreSQL in tier 3).

Import cost: this package does not import great_expectations at module level (about 4.5 s); the
gates import it when they run.
"""

from tradesentry.quality.gates import (
    FeedQuality,
    HarmonisedGateResult,
    RawGateResult,
    lift_hold,
    validate_harmonised,
    validate_raw,
)
from tradesentry.quality.report import quality_report, write_json
from tradesentry.quality.suites import generate_suites, stale_suites

__all__ = [
    "FeedQuality",
    "HarmonisedGateResult",
    "RawGateResult",
    "generate_suites",
    "lift_hold",
    "quality_report",
    "stale_suites",
    "validate_harmonised",
    "validate_raw",
    "write_json",
]
