"""Inference: local, vLLM and API backends, few-shot ICL, Best-of-N."""
