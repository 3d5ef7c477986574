"""Work orders: every alert dispatch sends to people, followed until it is done, with
escalation when nobody answers (README: Work orders)."""

from sensord.workorders._desk import TOLD, Change, Desk, Escalation, Taken, row_of
from sensord.workorders._kpi import ALL, GROUPINGS, Kpi, kpis, percentile
from sensord.workorders._kpi_metrics import observe_changes
from sensord.workorders._model import ACTIONS, FINISHED, OPEN, UNTAKEN, Entry, State, WorkOrder, work_order_id
from sensord.workorders._words import change_data, escalation_title, local_time, update_words

__all__ = [
    "ACTIONS",
    "ALL",
    "FINISHED",
    "GROUPINGS",
    "OPEN",
    "TOLD",
    "UNTAKEN",
    "Change",
    "Desk",
    "Entry",
    "Escalation",
    "Kpi",
    "State",
    "Taken",
    "WorkOrder",
    "change_data",
    "escalation_title",
    "kpis",
    "local_time",
    "observe_changes",
    "percentile",
    "row_of",
    "update_words",
    "work_order_id",
]
