"""Reports: an HTML page of what a replay alerted on, and why."""

from sensord.report._html import write_report

__all__ = ["write_report"]
