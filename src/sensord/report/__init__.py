"""Reports: an HTML page of what a replay alerted on, and why; one of work-order KPIs."""

from sensord.report._html import write_report
from sensord.report._kpi_html import PLOT_WORDS, kpi_plots, write_kpi_report

__all__ = ["PLOT_WORDS", "kpi_plots", "write_kpi_report", "write_report"]
