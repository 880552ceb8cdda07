"""Known labels in ``obs``: which cells have one."""

from __future__ import annotations

import numpy as np
import pandas as pd

MISSING_LABELS = ("", "?", "nan", "NaN", "unknown", "Unknown", "NA")


def labelled_mask(values: pd.Series) -> np.ndarray:
    """True where a label is present: not NaN and not one of ``MISSING_LABELS``."""
    return values.notna().to_numpy() & ~values.astype(str).isin(MISSING_LABELS).to_numpy()
