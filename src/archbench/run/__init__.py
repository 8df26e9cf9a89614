"""The run layer: orchestration of a study (everything between the command
line or the API and the leaves that train, measure and report).

- :mod:`~archbench.run.study`: preflight -> open the run directory -> measure
  -> train every unit through an executor -> report;
- :mod:`~archbench.run.preflight`: the checks made before anything is written;
- :mod:`~archbench.run.rundir`: the one owner of the run directory's layout;
- :mod:`~archbench.run.unit`: one (model, seed) unit, and every unit record;
- :mod:`~archbench.run.executors` and :mod:`~archbench.run.pool`: where units
  run (this process, worker processes side by side, Ray), one shape;
- :mod:`~archbench.run.threads` and :mod:`~archbench.run.jobs`: the CPU thread
  and side-by-side policies, decided by measuring;
- :mod:`~archbench.run.tracking` (MLflow) and :mod:`~archbench.run.signals`.
"""

from __future__ import annotations

from collections.abc import Callable

from archbench.records import Unit

Log = Callable[[str], None]                    # where progress lines go
OnResult = Callable[[str, int, Unit], None]    # (model, seed, unit): a finished unit, trained or failed
