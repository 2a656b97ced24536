"""The stages that run on a finished sweep, by name in `registry` (one signature: run(sweep_dir,
config, wandb=, resources=, log=)): each reads the sweep directory through llm_ray.io.sweepdir and
writes its own files beside it, never reaching into the trainer's internals. A stage's run is here
(validate, downstream, compress), its report section and plots in llm_ray.reporting (a module of the
same name), its math in the pure layers (fitting/), its command at the top."""
