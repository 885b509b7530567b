"""report stage: HTML/Markdown reports and plots for run folders.

    write_report(run_dirs, out_dir) -> Path of index.html
    plot_accuracy(rows, path, title)  grouped accuracy bars with 95% CI error bars
    plot_training(logs, path, title)  loss / learning-rate curves
    load_run(path) -> Run             a run folder as plain objects

matplotlib is imported only when a figure is drawn, so importing this package stays cheap.
"""

from mathdistill.report.plots import plot_accuracy, plot_training
from mathdistill.report.render import write_report
from mathdistill.report.runs import Run, load_run

__all__ = ["Run", "load_run", "plot_accuracy", "plot_training", "write_report"]
