"""Figures and self-contained HTML reports of ``ncmse train`` / ``ncmse ufm`` run directories.

Public API
----------
write_run_report(run_dir) -> Path
    Figures into ``RUN_DIR/figures/`` (PNG and SVG) and ``RUN_DIR/report.html``.
write_comparison_report(run_dirs, out_dir) -> Path
    Verdicts per run and "holds in k of n" over seeds, claim 4 over paired seeds
    (:mod:`ncmse.verdicts.pairing`), overlays, datasets × networks grids (MSE vs CE) and the final
    test-accuracy table of several runs, in ``out_dir/report.html``.
load_run(run_dir) -> Run
    The parsed contents of a run directory.

The report reads only files of run directories (docs/ARCHITECTURE.md) and draws with matplotlib's
Agg canvas; it never needs a display.
"""

from __future__ import annotations

from ncmse.report.compare import write_comparison_report
from ncmse.report.run_report import write_run_report
from ncmse.rundir.reader import Run, load_run

__all__ = ["Run", "load_run", "write_comparison_report", "write_run_report"]
