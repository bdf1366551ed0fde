"""Report: per-sample panels, the choice of samples, and the HTML report that collects them."""

from crowdpatch.report.figures import AskedWindow, SampleFigure, build_panels, render_sample
from crowdpatch.report.html import TrainingFigures, write_report
from crowdpatch.report.selection import pick_samples

__all__ = [
    "AskedWindow",
    "SampleFigure",
    "TrainingFigures",
    "build_panels",
    "pick_samples",
    "render_sample",
    "write_report",
]
