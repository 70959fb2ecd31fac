"""One record of a pytest run: run.json written (record.py: what the plugin saw) and read back
(results.py: what `testbed ab`, `bisect`, `merge`, `mutate` and the KCIDB export compare and
report), in the same words on both sides."""

from .record import RUN_FILE, SCHEMA, BootRecord, RunRecord, SplatRecord, plain
from .results import RunResults, load_results

__all__ = [
    "RUN_FILE",
    "SCHEMA",
    "BootRecord",
    "RunRecord",
    "RunResults",
    "SplatRecord",
    "load_results",
    "plain",
]
