"""Training and inference speed of teachers, students and KD students, printed as one JSON object.

    python benchmarks/bench_train.py [--epochs 6] [--dataset synthetic] [--data-root DIR]

In one process, on one torch thread, for the GAT (``normal`` mode) and the VGAE (``autoencoder``):
trains the teacher, then the student three ways — plain, with KD, and with KD and the teacher-output
cache — for the same epochs and batch size (``kd_batch_scaling`` off, so the ratio compares like
with like), and times every training epoch from its start to its last batch (validation excluded;
the first epoch is warm-up and left out). Inference is the trained models' forward pass over the
test graphs in batches of 256, best of three.

``kd_overhead_ratio`` = KD student epoch time / plain student epoch time (median epochs), the worse
of the two models, each distilled with its mode's default strategy (``kd_strategy``); ``kd_overhead_ratio_cached`` the same with the cache (its one teacher pass runs
before the first epoch and is reported as ``cache_build_seconds``); ``student_infer_speedup`` =
student graphs/s / teacher graphs/s, the smaller of the two models.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import lightning as L  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import ConcatDataset  # noqa: E402
from torch_geometric.loader import DataLoader  # noqa: E402

from kdcore import Engine, RunConfig  # noqa: E402
from kdcore.checkpoint import load_checkpoint  # noqa: E402

MODELS = {"gat": "normal", "vgae": "autoencoder"}


class EpochTimer(L.Callback):
    """Seconds and graphs of each training epoch, from its start to its last batch."""

    def __init__(self):
        self.epochs: list[tuple[float, int]] = []
        self.cache_seconds = 0.0

    def on_fit_start(self, trainer, pl_module):
        self._fit_started = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module):
        if not self.epochs:  # the teacher-output cache, if any, was built in on_fit_start
            self.cache_seconds = time.perf_counter() - self._fit_started
        self._started, self._graphs = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._graphs += int(batch.num_graphs)
        self._last = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.epochs.append((self._last - self._started, self._graphs))

    def summary(self) -> dict:
        timed = self.epochs[1:] or self.epochs
        seconds = statistics.median(s for s, _ in timed)
        graphs = timed[0][1]
        return {"epoch_seconds": round(seconds, 3), "graphs_per_epoch": graphs, "train_graphs_per_s": round(graphs / seconds, 1)}


@torch.no_grad()
def inference_rate(engine: Engine, checkpoint_path, graphs, repeat: int = 3) -> float:
    """Graphs per second of the model's forward pass over ``graphs`` in batches of 256."""
    model = engine.load_model(load_checkpoint(checkpoint_path), checkpoint_path)
    batches = list(DataLoader(graphs, batch_size=256))
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for batch in batches:
            model(batch.x, batch.id_token, batch.edge_index, batch.batch)
        best = min(best, time.perf_counter() - started)
    return len(graphs) / best


def bench_model(engine: Engine, base: RunConfig, model: str) -> dict:
    mode = MODELS[model]
    results: dict = {}
    variants = {
        "teacher": dict(model_size="teacher"),
        "student": dict(model_size="student"),
        "student_kd": dict(model_size="student", use_knowledge_distillation=True, cache_teacher_outputs=False),
        "student_kd_cached": dict(model_size="student", use_knowledge_distillation=True, cache_teacher_outputs=True),
    }
    checkpoints = {}
    for name, settings in variants.items():
        timer = EpochTimer()
        result = engine.run(RunConfig(**{**base.to_dict(), "mode": mode, **settings}), callbacks=[timer])
        results[name] = timer.summary()
        checkpoints[name] = result.checkpoint
        if name == "student_kd_cached":
            results[name]["cache_build_seconds"] = round(timer.cache_seconds, 3)

    plan = engine.plan(RunConfig(**{**base.to_dict(), "mode": mode}))
    datamodule = engine.build(plan).datamodule
    test_graphs = ConcatDataset(list(datamodule.test_sets.values()))
    for name in ("teacher", "student"):
        results[name]["infer_graphs_per_s"] = round(inference_rate(engine, checkpoints[name], test_graphs), 1)
    plain = results["student"]["epoch_seconds"]
    results["kd_overhead_ratio"] = round(results["student_kd"]["epoch_seconds"] / plain, 3)
    results["kd_overhead_ratio_cached"] = round(results["student_kd_cached"]["epoch_seconds"] / plain, 3)
    results["student_infer_speedup"] = round(results["student"]["infer_graphs_per_s"] / results["teacher"]["infer_graphs_per_s"], 2)
    results["kd_strategy"] = engine.modes.get(mode).default_strategy
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="kdcore-bench-") as root:
        base = RunConfig(
            dataset=args.dataset, data_root=args.data_root, experiment_root=root, max_epochs=args.epochs,
            batch_size=args.batch_size, early_stopping_patience=0, progress_bar=False, kd_batch_scaling=False,
            accelerator="cpu",
        )
        engine = Engine()
        models = {model: bench_model(engine, base, model) for model in MODELS}

    print(json.dumps({
        "dataset": args.dataset,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "kd_overhead_ratio": max(m["kd_overhead_ratio"] for m in models.values()),
        "kd_overhead_ratio_cached": max(m["kd_overhead_ratio_cached"] for m in models.values()),
        "student_infer_speedup": min(m["student_infer_speedup"] for m in models.values()),
        "models": models,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.python_implementation()} {platform.python_version()}",
    }, indent=2))


if __name__ == "__main__":
    main()
