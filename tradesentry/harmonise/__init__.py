"""Harmonisation: per-feed dbt staging generated from the feed specs, and the dbt runner.

Public API:

- ``generate(feeds_dir, project_dir) -> list[Path]`` / ``check_stale(feeds_dir, project_dir) -> list[str]``
- ``run_dbt(args, settings) -> DbtResult`` (raises ``DbtRunError`` naming the failing nodes)
- ``harmonise(settings)`` (``dbt build --exclude marts``) and ``build_marts(settings)``
  (``dbt build --select marts``): the two nightly invocations.
"""

from tradesentry.harmonise.codegen import check_stale, generate
from tradesentry.harmonise.dbt_runner import (
    DbtResult,
    DbtRunError,
    build_marts,
    dbt_env,
    dbt_vars,
    harmonise,
    run_dbt,
)

__all__ = [
    "DbtResult",
    "DbtRunError",
    "build_marts",
    "check_stale",
    "dbt_env",
    "dbt_vars",
    "generate",
    "harmonise",
    "run_dbt",
]
