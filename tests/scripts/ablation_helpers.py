"""Helpers of the ablation-script tests (table3, fig5, table7_8): settings overrides and artefact stamps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def config_with_tables(config: Path, out: Path, tables: dict[str, Any]) -> Path:
    """A copy of `config` (same work_dir, so artefacts are shared) with these `tables` settings."""
    cfg = json.loads(config.read_text(encoding="utf-8"))
    cfg["tables"] = tables
    out.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return out


def weight_stamps(work_dir: Path) -> dict[Path, int]:
    """Modification times of every trained or merged weight file under `work_dir`."""
    return {p: p.stat().st_mtime_ns for sub in ("experts", "moe") for p in (work_dir / sub).rglob("*.safetensors")}
