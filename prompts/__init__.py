"""Prompt templates and the one prompt builder shared by training and inference."""
