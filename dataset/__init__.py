"""Data layer: the record type, readers for 3D-EX / JSONL / Ishiwatari files, preprocessing."""
