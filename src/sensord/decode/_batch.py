"""The columnar form of one family's readings in one batch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sensord._types import Family


@dataclass(frozen=True, slots=True)
class FamilyBatch:
    """Readings of one family, one row per accepted message, in arrival order.

    `device` holds indices into the registry's device list of this family, so rule state
    can live in plain arrays indexed by device. `columns` maps field name → float64
    column (bool as 0/1, enum as its choice index, missing as NaN).
    """

    family: Family
    device: npt.NDArray[np.int64]
    ts: npt.NDArray[np.float64]
    received_at: npt.NDArray[np.float64]
    columns: dict[str, npt.NDArray[np.float64]]

    def __len__(self) -> int:
        return int(self.device.shape[0])

    @classmethod
    def empty(cls, family: Family, fields: list[str]) -> FamilyBatch:
        """A batch with no rows (handy for timers and tests)."""
        f = np.empty(0, dtype=np.float64)
        return cls(family, np.empty(0, dtype=np.int64), f, f, dict.fromkeys(fields, f))

    def extended(self, other: FamilyBatch) -> FamilyBatch:
        """This batch's rows, then `other`'s (the same family, so the same columns)."""
        return FamilyBatch(
            self.family,
            np.concatenate([self.device, other.device]),
            np.concatenate([self.ts, other.ts]),
            np.concatenate([self.received_at, other.received_at]),
            {k: np.concatenate([v, other.columns[k]]) for k, v in self.columns.items()},
        )

    def take(self, rows: npt.NDArray[np.intp]) -> FamilyBatch:
        """The sub-batch of the given row indices, in that order."""
        return FamilyBatch(
            self.family,
            self.device[rows],
            self.ts[rows],
            self.received_at[rows],
            {k: v[rows] for k, v in self.columns.items()},
        )
