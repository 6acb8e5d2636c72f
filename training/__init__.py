"""Training: expert finetuning, MoE merge, router finetuning, reward model, DSKD."""
