"""Reports: an HTML page of what a replay alerted on, and why; one of work-order KPIs."""

from sensord.report._html import write_report
from sensord.report._kpi_html import write_kpi_report

__all__ = ["write_kpi_report", "write_report"]
