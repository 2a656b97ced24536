"""IsoFLOP sweeps: each planned cell one Ray Tune trial (runner), their records gathered into the
results table (results), and a progress line while they run (progress)."""
