"""The near-tie re-check that training's int8 gate measures and the server applies: images whose top-1/top-2
probability gap (after the artifact's temperature) is below the margin run again in fp32."""

import numpy as np

DEFAULT_MARGIN = 0.1  # the server's SERVE_BF16_RECHECK_MARGIN default
SLOW_SHARE = 0.1  # an int8 model re-checking more of its images than this saves little time over bf16: both warn


def near_ties(probabilities: np.ndarray, margin: float) -> np.ndarray:
    """For each row of (N, classes) probabilities, whether its top two are closer than ``margin`` (never, with one
    class)."""
    if probabilities.shape[1] < 2:
        return np.zeros(len(probabilities), dtype=bool)
    top2 = np.sort(probabilities, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0] < margin
