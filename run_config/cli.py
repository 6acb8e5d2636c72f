"""Shared command-line plumbing: flags generated from a config model, error handling, exit codes."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel

from run_config.errors import DataError, LexiconError
from run_config.loader import StageConfig, is_literal, load_config, parse_set_option, scalar_type
from run_config.locks import held_folders, output_lock

log = logging.getLogger("lmlexicon")
OUTPUT_KEYS = ("output_dir", "work_dir")  # the config key naming the folder a stage writes
_runs: list[contextlib.ExitStack] = []  # one per run_main in progress (pipeline steps nest)


def add_config_flags(parser: argparse.ArgumentParser, model: type[StageConfig], skip: tuple[str, ...] = ()) -> None:
    """Add `--config`, `--set` and one kebab-case flag per scalar field of `model`."""
    parser.add_argument("--config", metavar="JSON", help="run config (JSON); flags override its values")
    parser.add_argument(
        "--set",
        dest="set_items",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, dotted for nested sections (repeatable)",
    )
    group = parser.add_argument_group(f"{model.__name__} keys (see README, config reference)")
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        inner, is_list = scalar_type(field.annotation)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            continue
        flag = "--" + name.replace("_", "-")
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        help_text = (field.description or "") + ("" if field.is_required() else f" (default: {default!r})")
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": help_text.strip().replace("%", "%%")}
        if inner is bool and not is_list:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            if is_literal(inner):
                kwargs["choices"] = list(get_args(inner))
                kwargs["type"] = type(get_args(inner)[0])
            elif inner in (int, float):
                kwargs["type"] = inner
            else:
                kwargs["type"] = str
            if is_list:  # --key A B and --key A --key B both give [A, B]
                kwargs["nargs"], kwargs["action"] = "+", "extend"
            kwargs["metavar"] = name.upper() if "choices" not in kwargs else None
        group.add_argument(flag, **kwargs)


def stage_parser(
    prog: str, doc: str | None, model: type[StageConfig], skip: tuple[str, ...] = ()
) -> argparse.ArgumentParser:
    """Return a stage's parser: first docstring line as description, config flags, `--verbose`."""
    parser = argparse.ArgumentParser(prog=prog, description=(doc or "").split("\n")[0])
    add_config_flags(parser, model, skip)
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser


def config_from_args(args: argparse.Namespace, model: type[StageConfig], **extra: Any) -> StageConfig:
    """Build the stage config: JSON file, then flags, then `--set` items, then `extra`.

    Inside `run_main`, the folder the config writes (`output_dir` or `work_dir`) is then locked for the
    rest of that run: a second process on the same folder is refused.
    """
    overrides: dict[str, Any] = {}
    for name in model.model_fields:
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    for item in getattr(args, "set_items", []) or []:
        key, value = parse_set_option(item)
        overrides[key] = value
    overrides.update({k: v for k, v in extra.items() if v is not None})
    cfg = load_config(getattr(args, "config", None), model, overrides)
    key = next((k for k in OUTPUT_KEYS if isinstance(getattr(cfg, k, None), str)), None)
    if _runs and key and os.environ.get("RANK", "0") == "0":  # under a launcher, rank 0 holds it for all
        _runs[-1].enter_context(output_lock(getattr(cfg, key), key))
    return cfg


# Third-party loggers whose INFO lines are probing noise, shown only with --verbose (faiss tries its AVX-512 and
# AVX2 builds first and logs a ModuleNotFoundError for each one the wheel lacks).
QUIET_LOGGERS = ("faiss.loader",)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)


def run_main(
    parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int | None], argv: list[str] | None
) -> int:
    """Parse `argv`, call `run`, and turn toolkit and operating-system errors into one stderr line and an
    exit code; output folders locked during the run are released on every way out."""
    args, unknown = parser.parse_known_args(argv)
    # The deepspeed launcher appends --local_rank=N (or --local-rank=N); accept exactly that.
    rest = [a for a in unknown if not a.startswith(("--local_rank", "--local-rank"))]
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    setup_logging(getattr(args, "verbose", False))
    try:
        with contextlib.ExitStack() as stack:
            _runs.append(stack)
            try:
                code = run(args)
            except OSError as e:
                raise LexiconError(_os_error(e)) from e  # while the folders it names are still held
            finally:
                _runs.pop()
    except LexiconError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        print(f"{parser.prog}: error: {_os_error(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    return 0 if code is None else code


def _os_error(e: OSError) -> str:
    """One line for an operating-system error: the file(s) it names, else the folders being written."""
    names = " -> ".join(str(n) for n in (e.filename, e.filename2) if n is not None)
    if names:
        return f"{names}: {e.strerror or e}"
    folders = ", ".join(map(str, held_folders()))
    return f"{e.strerror or e}" + (f" (writing in {folders})" if folders else "")


def skip_finished(prog: str, cfg: Any, finished: Callable[[Any], bool]) -> bool:
    """True, after saying so, when `cfg.force` is off and `finished(cfg)`: the stage's outputs are current."""
    if cfg.force or not finished(cfg):
        return False
    print(f"{prog}: {cfg.output_dir} is up to date (use --force to redo)")
    return True


def existing_file(path: str | Path) -> Path:
    """Return `path` as a Path, or raise a one-line error naming it."""
    p = Path(path)
    if not p.is_file():
        raise DataError(str(p), None, None, "no such file")
    return p
