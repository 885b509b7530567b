"""report stage: HTML/Markdown reports and plots for run folders (docs/run-folder.md).

    write_report(run_dirs, out_dir) -> Path of index.html
    plot_accuracy(rows, path, title)          grouped accuracy bars with 95% CI error bars
    plot_by_scope(rows, scopes, path, title)  accuracy by round/iteration, one line per series
    plot_training(logs, path, title)          loss / learning-rate curves
    figure(size) -> (fig, ax); save(fig, path)  any other figure, drawn the same way (report.plots)
    load_run(path) -> Run                     a run folder (manifest schema 2) as plain objects

matplotlib is imported only when a figure is drawn, so importing this package stays cheap.
"""

from mathdistill.report.plots import figure, plot_accuracy, plot_by_scope, plot_training, save
from mathdistill.report.render import write_report
from mathdistill.report.runs import Run, load_run

__all__ = ["Run", "figure", "load_run", "plot_accuracy", "plot_by_scope", "plot_training", "save", "write_report"]
