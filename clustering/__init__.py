"""Embedding clustering: balanced k-means into semantic domains, assignment of new inputs."""
