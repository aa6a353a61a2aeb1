"""The data doctor's report: what was found, as a text table, a summary line or JSON.

Example:
    >>> report = check_data("flowers/")
    >>> print(report.table())          # one line per finding, then what training will do
    >>> report.to_dict()["exit_code"]  # 0: nothing skipped; 1: some files skipped or training would not start
    0
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable

from transfer.data.findings import Finding

_TABLE_ROWS_PER_CODE = 20


_SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
_ACTION_ORDER = {a: i for i, a in enumerate(("stop", "skip", "review", "convert", "use", "ignore"))}


@dataclass
class DataReport:
    """Everything the doctor found, with the numbers training will see.

    ``findings`` are sorted (errors first); ``usable`` counts images training
    will use; ``class_counts`` counts them per class; ``median_side`` is the
    median short side in pixels of the usable images (None when unknown), for
    ``transfer train``'s image-size warning.
    """

    source: str
    root: str | None
    num_images: int
    usable: int
    class_counts: dict[str, int]
    findings: list[Finding]
    seconds: float
    median_side: int | None = None

    @property
    def skipped(self) -> list[str]:
        """Image files training leaves out (each named in a warning when it runs)."""
        return sorted({f.path for f in self.findings if f.action == "skip" and f.line is None})

    @property
    def stops(self) -> list[Finding]:
        """Findings that stop training until fixed."""
        return [f for f in self.findings if f.action == "stop"]

    @property
    def exit_code(self) -> int:
        """0 when training would use every file; 1 when it would skip some or not start."""
        return 1 if any(f.action in ("stop", "skip") for f in self.findings) else 0

    def _show(self, path: str) -> str:
        if self.root and not path.startswith("tfds:"):
            try:
                rel = os.path.relpath(path, self.root)
            except ValueError:
                return path
            if not rel.startswith(".."):
                return rel
        return path

    def table(self, *, all_rows: bool = False) -> str:
        """A plain-text table, one line per finding; errors always listed in full.

        Warnings and notes list at most 20 files per problem unless ``all_rows``.
        """
        lines = [self.headline()]
        if not self.findings:
            return lines[0]
        rows = []
        shown: Counter = Counter()
        hidden: Counter = Counter()
        for f in self.findings:
            if f.severity != "error" and not all_rows and shown[f.code] >= _TABLE_ROWS_PER_CODE:
                hidden[f.code] += 1
                continue
            shown[f.code] += 1
            where = self._show(f.path) + (f":{f.line}" if f.line is not None else "")
            detail = f.detail.replace(f"'{self.root}{os.sep}", "'") if self.root else f.detail
            rows.append((f.severity, f.action, f.code, where, detail))
        widths = [max(len(r[i]) for r in rows + [("SEVERITY", "ACTION", "PROBLEM", "FILE", "")]) for i in range(4)]
        header = ("SEVERITY", "ACTION", "PROBLEM", "FILE", "DETAIL")
        for row in [header, *rows]:
            lines.append("  ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(row)).rstrip())
        for code, n in sorted(hidden.items()):
            lines.append(f"... and {n} more '{code}' (use --all or --json to list every file)")
        lines.append("")
        lines.append(self.actions_text())
        return "\n".join(lines)

    def headline(self) -> str:
        where = f" in '{self.root}'" if self.root else ""
        classes = f" in {len(self.class_counts)} classes" if self.class_counts else ""
        return (f"Checked {self.num_images} images{classes}{where} in {self.seconds:.1f}s: "
                f"{self.usable} usable, {len(self.skipped)} to skip, "
                f"{sum(f.severity == 'warning' for f in self.findings)} warnings.")

    def actions_text(self) -> str:
        """What training will do, in words (the legend under the table)."""
        parts = []
        stops = self.stops
        if stops:
            parts.append(f"Training will not start until the {len(stops)} 'stop' problem(s) are fixed.")
        if self.skipped:
            parts.append(f"Training skips the {len(self.skipped)} 'skip' file(s), naming each; "
                         "--quarantine DIR moves them aside.")
        by_code = Counter(f.code for f in self.findings if f.action not in ("stop", "skip"))
        if by_code:
            parts.append("Used as noted: " + ", ".join(f"{code} {n}" for code, n in sorted(by_code.items())) + ".")
        return " ".join(parts) if parts else "Nothing to fix."

    def summary(self) -> str:
        """Two lines for the start of `transfer train`: counts per problem, and where to see the details."""
        if not self.findings:
            return f"Data check: {self.num_images} images in {self.seconds:.1f}s, all usable."
        skip = Counter(f.code for f in self.findings if f.action == "skip" and f.line is None)
        other = Counter(f.code for f in self.findings if f.action not in ("skip", "stop", "ignore"))
        text = f"Data check: {self.num_images} images in {self.seconds:.1f}s: {self.usable} usable"
        if skip:
            text += f", {sum(skip.values())} skipped (" + ", ".join(f"{c} {n}" for c, n in sorted(skip.items())) + ")"
        if other:
            text += "; notes: " + ", ".join(f"{c} {n}" for c, n in sorted(other.items()))
        return text + f". Details: transfer check-data {self.source or 'DATA'}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "root": self.root,
            "num_images": self.num_images,
            "usable": self.usable,
            "class_counts": self.class_counts,
            "seconds": round(self.seconds, 3),
            "median_side": self.median_side,
            "exit_code": self.exit_code,
            "findings": [f.to_dict() for f in self.findings],
        }


def _sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    unique = list(dict.fromkeys(findings))
    return sorted(unique, key=lambda f: (_SEVERITY_ORDER.get(f.severity, 9), _ACTION_ORDER.get(f.action, 9),
                                         f.code, f.path, f.line or 0))
