"""`sensord rules test`: unit tests for alert rules, in event time, with no broker."""

from sensord.ruletest._runner import CaseResult, FileResult, run_test_file
from sensord.ruletest._spec import expand_series, read_test_file

__all__ = ["CaseResult", "FileResult", "expand_series", "read_test_file", "run_test_file"]
