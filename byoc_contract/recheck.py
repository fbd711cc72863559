"""The near-tie re-check that training's int8 gate measures and the server applies: images whose top-1/top-2
probability gap (after the artifact's temperature) is below the margin run again in fp32."""

DEFAULT_MARGIN = 0.1  # the server's SERVE_BF16_RECHECK_MARGIN default
