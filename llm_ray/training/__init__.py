"""Training one model: the single-device model, everything DeepSpeed in one place (engine), the
per-worker loop that Ray Train runs (loop), and the driver side of a run (launch)."""
