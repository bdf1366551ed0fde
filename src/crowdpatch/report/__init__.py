"""Report: per-sample figures and the HTML report that collects them."""

from crowdpatch.report.figures import AskedWindow, SampleFigure, build_figure, render_sample
from crowdpatch.report.html import write_report

__all__ = ["AskedWindow", "SampleFigure", "build_figure", "render_sample", "write_report"]
