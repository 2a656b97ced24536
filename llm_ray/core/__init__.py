"""The pure layer: FLOPs ledger, typed configs, sweep plans and their named recipes, and the
records that pass between stages. Imports no torch, Ray, W&B or Hydra; tested in milliseconds."""
