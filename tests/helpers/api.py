"""`infer` command lines for the API backends against the local stub server."""

from __future__ import annotations

from pathlib import Path


def api_argv(vendor: str, rows: Path, out: Path, base_url: str, *extra: str) -> list[str]:
    """Send `rows` as `vendor`'s model-x to the stub at `base_url`, the key in STUB_KEY, outputs in `out`."""
    return [
        "--backend",
        vendor,
        "--model",
        "model-x",
        "--input",
        str(rows),
        "--output-dir",
        str(out),
        "--base-url",
        base_url,
        "--api-key-env",
        "STUB_KEY",
        *extra,
    ]
