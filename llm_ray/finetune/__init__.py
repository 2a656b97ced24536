"""Fine-tuning pre-trained models for text classification (the downstream stage's torch layer, at the
level of training): labelled tasks and their splits (`tasks`), the stage's config (`config`), the
classifier (`model`), the fine-tune loop (`loop`) and the scikit-learn baselines (`baselines`)."""
