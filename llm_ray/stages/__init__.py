"""The stages that run on a finished sweep: each reads the sweep directory's records (RunRecords,
results.parquet, fit.json, weights.pt) and writes its own files beside them, never reaching into the
trainer's internals. Their math lives in the pure layers (fitting/); their commands at the top."""
