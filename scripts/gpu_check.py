"""Run the GPU check's steps (scripts.gpu_steps), each in its own process under its own timeout, within a budget.

`python -m scripts.gpu_check` (on the device, after scripts/gpu_check.sh installed the carried wheels) runs
every step on cuda within BUDGET_S; `--dry-run` runs them on the CPU at tiny sizes within DRY_BUDGET_S.
Prints one `step=...` line per result (a step that fails or runs out of time prints `failed: <why>` for
each of its lines, and the end of its log to stderr); exits 1 when a step failed, 2 when the check cannot
start. A step's whole log is in `<work>/logs/<step>.log`.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scripts.gpu_payload import PAYLOAD, REPO_ROOT, check_payload, copy_assets, wheel_plan
from scripts.gpu_steps import STEPS, Env

BUDGET_S = 480
DRY_BUDGET_S = 115
GRACE_S = 5
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}


def stop(proc: subprocess.Popen) -> None:
    """End a step's process group: SIGINT first, so that `finally` blocks release their locks (a JIT build's lock
    left behind makes every later build wait forever), SIGKILL after GRACE_S."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.communicate(timeout=GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


def run_step(name: str, env: Env, timeout: float) -> tuple[list[str], bool]:
    """Run one step in a new process group (killed whole at the timeout); its lines, and whether it succeeded."""
    cmd = [sys.executable, "-m", "scripts.gpu_check", "--step", name, "--payload", str(env.payload)]
    cmd += ["--work", str(env.work), "--device", env.device] + (["--dry-run"] if env.dry_run else [])
    variables = {**os.environ, **OFFLINE, "LMLEXICON_CACHE": str(env.work / "cache")}
    log = env.work / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as err:
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=variables, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(proc)
            return [], False
    lines = [s for s in out.splitlines() if s.startswith("step=")]
    return lines, proc.returncode == 0


def last_error(log: Path) -> str:
    """The last line of a step's log that looks like an error (else its last line)."""
    rows = [s.strip() for s in log.read_text(encoding="utf-8", errors="replace").splitlines() if s.strip()]
    errors = [s for s in rows if "Error" in s or "error:" in s]
    return (errors or rows or ["no output"])[-1][:300]


def run_all(env: Env, budget: float, only: list[str]) -> int:
    """Run the steps in order, each under min(its timeout, what is left of `budget`); 1 if any failed.

    A budget above the default stretches every step's timeout alike (a loaded machine, a test).
    """
    deadline = time.monotonic() + budget
    stretch = max(budget / (DRY_BUDGET_S if env.dry_run else BUDGET_S), 1.0)
    failed = False
    for name, (_fn, gpu_s, dry_s, names) in STEPS.items():
        if only and name not in only:
            continue
        left = deadline - time.monotonic()
        if left < 5:
            lines, ok, why = [], False, f"out of time (budget {budget:.0f} s spent)"
        else:
            limit = min((dry_s if env.dry_run else gpu_s) * stretch, left)
            t0 = time.monotonic()
            lines, ok = run_step(name, env, limit)
            spent = time.monotonic() - t0
            why = f"timed out after {limit:.0f} s" if spent >= limit else last_error(env.work / "logs" / f"{name}.log")
            print(f"# {name}: {spent:.1f} s", file=sys.stderr)
        tag = " [dry-run: cpu, tiny shapes]" if env.dry_run else ""
        for s in lines:
            print(s + tag, flush=True)
        if not ok:
            failed = True
            log = env.work / "logs" / f"{name}.log"
            if log.is_file():
                print(
                    f"# {name}: last lines of its log\n"
                    + "\n".join(log.read_text(errors="replace").splitlines()[-20:]),
                    file=sys.stderr,
                )
            for missing in [n for n in names if not any(s.startswith(f"step={n} ") for s in lines)]:
                print(f"step={missing} failed: {why}{tag}", flush=True)
    return 1 if failed else 0


def payload_for_dry_run(work: Path) -> Path:
    """`.whl/` when it is a complete payload; else the assets copied from the local cache (wheels only planned)."""
    plan = wheel_plan()
    problem = check_payload(PAYLOAD, plan)
    if problem is None:
        print(f"payload: {PAYLOAD} complete", flush=True)
        return PAYLOAD
    planned = ", ".join(f"{n}=={v}" for n, v, _ in plan)
    print(f"payload: not prepared ({problem}); planned wheels: {planned}", flush=True)
    dest = work / "payload"
    copy_assets(dest)
    return dest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, within 2 minutes")
    parser.add_argument("--payload", type=Path, help="carried payload folder (default: .whl/)")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--device", help="device of the steps (default: cuda; cpu with --dry-run)")
    parser.add_argument("--only", nargs="*", default=[], choices=list(STEPS), help="run only these steps")
    parser.add_argument("--budget", type=float, help=f"seconds for all steps (default {BUDGET_S}; dry {DRY_BUDGET_S})")
    parser.add_argument("--step", choices=list(STEPS), help=argparse.SUPPRESS)  # one step, in this process
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = args.device or ("cpu" if args.dry_run else "cuda")
    if args.step:
        env = Env(args.payload, args.work, device, args.dry_run)
        for s in STEPS[args.step][0](env):
            print(s, flush=True)
        return 0
    if not args.dry_run:
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            print(
                "gpu_check: no CUDA device here (run `bash scripts/gpu_check.sh --dry-run` on a CPU)", file=sys.stderr
            )
            return 2
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = args.work or Path(tmp)
        payload = args.payload or (payload_for_dry_run(work) if args.dry_run else PAYLOAD)
        if not args.dry_run and (problem := check_payload(payload)):
            print(f"gpu_check: {problem}", file=sys.stderr)
            return 2
        budget = args.budget or (DRY_BUDGET_S if args.dry_run else BUDGET_S)
        return run_all(Env(payload.resolve(), work.resolve(), device, args.dry_run), budget, args.only)


if __name__ == "__main__":
    sys.exit(main())
