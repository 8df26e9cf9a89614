"""The Python API: ``archbench.compare([...])`` runs a study and returns a
result that tabulates itself (and renders inline in Jupyter)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path


@dataclass
class StudyResult:
    record: dict
    run_dir: Path

    def summary(self) -> list[dict]:
        """One row per model: accuracy statistics and measured costs."""
        from archbench.report import analyze

        an = analyze(self.record, resamples=500)
        rows = []
        for name, s in an["models"].items():
            a = s["accuracy"]
            row = {"model": name, "accuracy_mean": a.get("mean"), "accuracy_std": a.get("std"),
                   "accuracy_ci_low": (a.get("ci") or {}).get("low"), "accuracy_ci_high": (a.get("ci") or {}).get("high"),
                   "n": a.get("n", 0), "failed_units": len(s["failed"])}
            row.update(s["costs"])
            rows.append(row)
        return rows

    def to_dataframe(self):
        """The summary as a pandas DataFrame (pandas is optional)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError("to_dataframe() needs pandas: pip install pandas "
                              "(or use .summary(), a list of dicts)") from exc
        return pd.DataFrame(self.summary()).set_index("model")

    def _repr_html_(self) -> str:
        from archbench.report import comparison_rows, TABLE_HEAD

        head = "".join(f"<th>{html.escape(h)}</th>" for h in TABLE_HEAD)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                       for r in comparison_rows(self.record))
        return (f"<div><strong>archbench run {html.escape(self.record['name'])}</strong> "
                f"({html.escape(str(self.run_dir))})<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
                f"</table></div>")

    def __repr__(self) -> str:
        from archbench.report import comparison_rows, text_table, TABLE_HEAD

        return text_table(TABLE_HEAD, comparison_rows(self.record))


def compare(models, seeds=(0,), *, epochs: int = 5, batch_size: int = 64, lr: float = 1e-3,
            device: str = "auto", data_dir=None, train_limit: int | None = None, test_limit: int | None = None,
            out: str = "runs", name: str | None = None, quiet: bool = True) -> StudyResult:
    """Train and measure ``models`` (registry names or ``module:callable``)
    over ``seeds``; write the run directory; return a :class:`StudyResult`."""
    from archbench.study import StudyConfig, run_study
    from archbench.train import TrainConfig

    cfg = StudyConfig(models=list(models), seeds=list(seeds),
                      train=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, device=device),
                      data_dir=data_dir, train_limit=train_limit, test_limit=test_limit, out=out, name=name)
    record, run_dir = run_study(cfg, quiet=quiet)
    return StudyResult(record, run_dir)
