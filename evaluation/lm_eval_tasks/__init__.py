"""lm-evaluation-harness task definitions (`lm_eval --include_path evaluation/lm_eval_tasks --tasks ...`)."""
