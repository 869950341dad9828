"""Run logs: CSV files and TensorBoard scalars, written by the main process only."""
from __future__ import annotations

import csv
from pathlib import Path


class RunLogger:
    """``log(group, step, {name: value})`` appends a row to ``{output_dir}/{group}_log.csv`` and writes
    TensorBoard scalars ``{group}/{name}`` under ``{output_dir}/tensorboard``. Disabled (no files) when
    ``enabled`` is False. A CSV's columns are fixed by its first row (or by the file being appended to)."""

    def __init__(self, output_dir: str | Path, enabled: bool = True, tensorboard: bool = True):
        self.output_dir, self.enabled = Path(output_dir), enabled
        self.writer = None
        self._columns: dict[str, list[str]] = {}
        if enabled:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.output_dir / "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """Drop the CSV rows of steps after ``step`` (left by the run a resume continues)."""
        if not self.enabled:
            return
        for path in self.output_dir.glob("*_log.csv"):
            with path.open(newline="") as f:
                rows = list(csv.reader(f))
            if not rows:
                continue
            kept = [rows[0]] + [r for r in rows[1:] if r and float(r[0]) <= step]
            if len(kept) != len(rows):
                with path.open("w", newline="") as f:
                    csv.writer(f).writerows(kept)

    def csv_path(self, group: str) -> Path:
        return self.output_dir / f"{group}_log.csv"

    def log(self, group: str, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        path = self.csv_path(group)
        if group not in self._columns:
            if path.is_file() and path.stat().st_size:
                with path.open() as f:
                    self._columns[group] = next(csv.reader(f))
            else:
                self._columns[group] = ["step"] + list(values)
                with path.open("w", newline="") as f:
                    csv.writer(f).writerow(self._columns[group])
        with path.open("a", newline="") as f:
            csv.DictWriter(f, self._columns[group], extrasaction="ignore").writerow({"step": step, **values})
        if self.writer is not None:
            for name, v in values.items():
                self.writer.add_scalar(f"{group}/{name}", v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
