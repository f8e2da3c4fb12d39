"""Default topic names, relative so that a namespace applies; every one is a node parameter."""

CAMERA = "camera/image_raw"
INSTRUCTION = "instruction"
ACTION = "action"
TWIST = "delta_twist_cmds"
CACHE_STATS = "cache_stats"
DIAGNOSTICS = "/diagnostics"
