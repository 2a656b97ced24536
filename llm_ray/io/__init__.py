"""What touches the outside world from every layer above: storage (one URL for every file, one
atomic write) and W&B tracking."""
