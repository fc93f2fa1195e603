"""Recipe sweep: train variants of a config side by side at the same step budget, then score them all.

Each variant is ``configs/colournet.yaml`` plus a few ``key=value`` overrides (the same ones ``sarcolor train``
takes). All variants train at once (one process each, one torch thread), each keeping its EMA weights at 2/3
of its steps (``runs/sweep/NAME-2of3.safetensors``) and at the end (``NAME-end.safetensors``); after
``--minutes`` the unfinished ones are stopped with SIGTERM (they checkpoint first). Then one ``sarcolor
evaluate`` run scores every kept model on the config's validation split. On a CPU, run a few variants at a time
(``--only``); the model card's sweep ran all of them at once on one GPU:

    python experiments/recipe_sweep.py --device cuda --minutes 6.6          # all variants, then the evaluation
    python experiments/recipe_sweep.py --only ref,ssim15 --device cpu --minutes 75
    python experiments/recipe_sweep.py --evaluate-only                      # score what runs/sweep holds
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sarcolor.train import resolve_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "colournet.yaml"
# name: overrides of configs/colournet.yaml (the colour model), for its ablation: rebalancing of the colour
# classes, the optical-rendering conditioning, per-source balanced sampling, and width.
VARIANTS: dict[str, list[str]] = {
    "ref": [],
    "norebal": ["train.rebalance=1.0"],  # plain cross-entropy: no weight toward rare colours
    "norender": ["model.renders=[]"],  # one colour balance for every source
    "nobalance": ["train.balance_sources=false"],  # sources drawn by area (volkov_s1s2 dominates)
    "w48": ["model.width=48"],
}


class Variant(threading.Thread):
    """One variant: train to 2/3 of its steps, keep that model, resume to the end (``--resume`` is exact)."""

    def __init__(self, name: str, overrides: list[str], runs: Path, device: str, minutes: float) -> None:
        super().__init__(daemon=True)
        self.name_, self.runs, self.stopped, self.child = name, runs, False, None
        self.ov = [o.format(teacher=max(minutes - 1.5, 0.5)) for o in overrides]
        self.cmd = [sys.executable, "-m", "sarcolor", "train", "--config", str(CONFIG), "--device", device, "-q",
                    f"run_dir={runs / name}", "train.threads=1", "train.max_minutes=0", *self.ov]
        tc = resolve_config(CONFIG, self.cmd[self.cmd.index("-q") + 2:])["train"]  # what the run will use
        self.snap = 0 if tc["max_minutes"] else int(tc["steps"]) * 2 // 3  # a time schedule: no 2/3 point
        self.log = open(runs / f"{name}.log", "w")

    def _phase(self, cmd: list[str]) -> int:
        if self.stopped:
            return 1
        self.child = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        return self.child.wait()

    def run(self) -> None:
        if self.snap:
            if self._phase([*self.cmd, f"train.stop_at={self.snap}"]) or self.stopped:
                return
            shutil.copyfile(self.runs / self.name_ / "model.safetensors", self.runs / f"{self.name_}-2of3.safetensors")
            self._phase([*self.cmd, "--resume"])
        else:
            self._phase(self.cmd)

    def stop(self) -> None:
        """SIGTERM: the run checkpoints at the end of its step and exits; no later phase starts."""
        self.stopped = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated variant names (default: all)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--minutes", type=float, default=75.0, help="wall-time limit of the training phase")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "sweep"), help="folder of the variants' runs")
    ap.add_argument("--evaluate-only", action="store_true", help="skip training; score the models in --runs")
    ap.add_argument("--no-evaluate", action="store_true", help="train only (e.g. where the validation data is not)")
    args = ap.parse_args()
    runs = Path(args.runs)
    names = args.only.split(",") if args.only else list(VARIANTS)
    unknown = set(names) - set(VARIANTS)
    if unknown:
        sys.exit(f"recipe_sweep: unknown variant(s) {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    if not args.evaluate_only:
        runs.mkdir(parents=True, exist_ok=True)
        variants = {n: Variant(n, VARIANTS[n], runs, args.device, args.minutes) for n in names}
        for v in variants.values():
            v.start()
        t0 = time.time()
        while any(v.is_alive() for v in variants.values()) and time.time() - t0 < args.minutes * 60:
            time.sleep(5)
        for v in variants.values():
            v.stop()
        for n, v in variants.items():
            v.join()
            print(f"{n}: {'stopped at the time limit' if v.stopped else 'finished'}", flush=True)
            if (runs / n / "model.safetensors").is_file():  # a flat, distinctly named copy for the report
                shutil.copyfile(runs / n / "model.safetensors", runs / f"{n}-end.safetensors")
    if args.no_evaluate:
        return
    models = [str(p) for n in names for p in (runs / f"{n}-2of3.safetensors", runs / f"{n}-end.safetensors")
              if p.is_file()]
    if not models:
        sys.exit(f"recipe_sweep: no models under {runs}")
    subprocess.run([sys.executable, "-m", "sarcolor", "evaluate", "--config", str(CONFIG), "--models", *models,
                    "--no-baselines", "--samples", "0", "-o", str(runs / "report")], check=True)
    print((runs / "report" / "summary.md").read_text())


if __name__ == "__main__":
    main()
