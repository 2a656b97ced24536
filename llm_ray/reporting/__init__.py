"""The answer in words and pictures: fit.json and its plots (fit), report.md (markdown), the other
plots (plots), the sweep's W&B fit run (wandb_fit), and number formatting shared by all (text); each
stage's report section, plots and W&B run beside them (validation, downstream, compress +
compress_plots). Reads records and tables only; never Ray or torch."""
