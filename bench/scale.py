"""Scale of the window store: build rate and memory at two cohort sizes 10x apart, and Stage 1
reading its windows from a store against Stage 1 reading the same windows from memory.

The cohort is synthetic at the paper's shape: 450 ROIs x 490 frames at TR 0.72 s (AR(1) noise per
ROI, phi 0.9, plus a shared global signal), generated lazily scan by scan from a per-index seed
(`SyntheticCohort`: the generator never holds the cohort). The feature extractor is the paper's:
`FmriFeatureExtractor(num_rois=450, target_tr=2.0, window_length=160, window_stride=None)`; 490
frames at 0.72 s resample to 176 frames at 2 s, one window of 160 per scan.

Measured, each step in a fresh Python process so that its peak RSS (`VmHWM`) is its own:

(a) `build_window_store` (survey + shards + merge, `--num-proc` processes, shards of
    `--shard-size` scans) at each size: scans/s per process (wall clock and per CPU-second; the
    lazy generator runs inside it, twice per scan: survey and shards, and its share is printed)
    and peak RSS.
(b) Stage 1 from the store (`train_stage1` with `window_store=`), tiny model (hidden 32, 1 layer,
    1 decoder layer, 2 heads, 16 codes, patches of 16, batches of 16), at each size: windows/s of
    the training loop and peak RSS. The full batches of one epoch at the smaller size, capped at
    `--max-steps`; the same number of steps at both sizes, so that the per-step memory is compared while the store is
    10x larger.
(c) Stage 1 from memory at the larger size: the same model, seed and steps through the same
    `Stage1Trainer`, fed a plain in-memory dataset of the store's training windows (read into one
    tensor before the timed part). Windows/s against (b); the seconds spent fetching batches, and
    a model-free loader pass over both datasets, are printed beside it.

Run (about 15-20 minutes on one free CPU core; `--quick` takes a few minutes, at sizes 50 and 500,
and its TARGET lines are not the targets' figures):

    .venv/bin/python bench/scale.py [--sizes 500 5000] [--num-proc 1] [--max-steps 25] [--quick]
        [--workdir DIR] [--keep]

Targets (fixed before any run), one TARGET line each; the script exits 0 either way:

    store_build_peak_rss_growth     peak RSS, larger / smaller size, store build      <= 1.25x
    stage1_store_peak_rss_growth    peak RSS, larger / smaller size, Stage 1 (store)  <= 1.25x
    store_build_scans_per_s         build scans/s per process (larger size) / 20      >= 1.00x
    stage1_store_vs_memory          Stage 1 windows/s, store / memory (larger size)   >= 0.90x

Rates are wall clock (the store's pages are in the page cache, just written: a cold read from
disk is not measured); the per-CPU-second figures are printed beside them for a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

N_ROIS, N_FRAMES, TR = 450, 490, 0.72
TARGET_TR, WINDOW_LENGTH, WINDOW_STRIDE = 2.0, 160, None
MODEL = {
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_decoder_layers": 1,
    "num_attention_heads": 2,
    "num_codes": 16,
    "patch_length": 16,
}
BATCH_SIZE = 16
DEFAULT_SIZES, QUICK_SIZES = (500, 5000), (50, 500)
MAX_RSS_GROWTH, MIN_SCANS_PER_S, MIN_STORE_VS_MEMORY = 1.25, 20.0, 0.90
RESULT = "SCALE_RESULT "
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# the synthetic cohort


def synthetic_scan(index: int) -> Any:
    """Scan `index`: `(450, 490)` float32, AR(1) noise per ROI (phi 0.9) + a shared global signal + 100."""
    import numpy as np
    from scipy.signal import lfilter

    rng = np.random.default_rng([N_ROIS, N_FRAMES, index])
    data = lfilter(
        np.float32([1.0]), np.float32([1.0, -0.9]), rng.standard_normal((N_ROIS, N_FRAMES), dtype=np.float32), axis=1
    )
    data += 0.5 * rng.standard_normal((1, N_FRAMES), dtype=np.float32)
    data += 100.0
    return data.astype(np.float32, copy=False)


class SyntheticCohort(Sequence):
    """`n` synthetic scans, one subject each, each generated when asked for (a lazy source, like files on disk)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Any:
        from modeling_fmrilm.io import FmriScan

        if not 0 <= index < self.n:
            raise IndexError(index)
        return FmriScan(synthetic_scan(index), TR, f"sub-{index:05d}", dataset="synthetic450")


def feature_extractor() -> Any:
    from modeling_fmrilm.feature_extraction_fmrilm import FmriFeatureExtractor

    return FmriFeatureExtractor(
        num_rois=N_ROIS, target_tr=TARGET_TR, window_length=WINDOW_LENGTH, window_stride=WINDOW_STRIDE
    )


# ---------------------------------------------------------------------------------------------
# measuring inside a worker process


def _status_mb() -> dict[str, float]:
    """`VmHWM`, `VmRSS`, `RssAnon`, `RssFile` of this process (MiB)."""
    values = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            name, _, rest = line.partition(":")
            if name in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                values[name] = int(rest.split()[0]) / 1024
    return values


class PeakMemory:
    """This process's peak RSS: `VmHWM` (exact, the kernel's high-water mark) and the largest
    `RssAnon` (heap) and `RssFile` (mapped files, e.g. a memory-mapped store) sampled every 20 ms."""

    def __init__(self) -> None:
        self.anon = self.file = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            status = _status_mb()
            self.anon, self.file = max(self.anon, status["RssAnon"]), max(self.file, status["RssFile"])
            self._stop.wait(0.02)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def report(self) -> dict[str, float]:
        """Peak figures so far (MiB); `children_peak_mb` is the largest finished child's peak."""
        import resource

        status = _status_mb()
        return {
            "peak_rss_mb": status["VmHWM"],
            "peak_anon_mb": max(self.anon, status["RssAnon"]),
            "peak_file_mb": max(self.file, status["RssFile"]),
            "children_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        }


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads) and its finished children."""
    import resource

    return sum(
        u.ru_utime + u.ru_stime
        for u in (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    )


def timed_method(cls: type, name: str, clock: dict[str, float]) -> None:
    """Wrap `cls.name` so that its wall seconds add up in `clock["fetch_s"]` (instrumentation in this worker only)."""
    original = getattr(cls, name)

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            clock["fetch_s"] = clock.get("fetch_s", 0.0) + time.perf_counter() - start

    setattr(cls, name, wrapper)


def train_timer(clock: dict[str, float]) -> Any:
    """A TrainerCallback recording the wall and CPU seconds of the training loop (train begin to end)."""
    from transformers import TrainerCallback

    class TrainTimer(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock["wall_start"], clock["cpu_start"], clock["fetch_s"] = time.perf_counter(), cpu_seconds(), 0.0

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock["train_wall_s"] = time.perf_counter() - clock.pop("wall_start")
            clock["train_cpu_s"] = cpu_seconds() - clock.pop("cpu_start")
            clock["steps"] = state.global_step

    return TrainTimer()


def stage1_arguments(params: dict) -> tuple[Any, Any]:
    """`Stage1Arguments` and `Stage1TrainingArguments` of a measured run (the same for store and memory)."""
    from modeling_fmrilm.training.stage1 import Stage1Arguments, Stage1TrainingArguments

    args = Stage1Arguments(
        window_store=params["store"], target_tr=TARGET_TR, window_length=WINDOW_LENGTH, window_stride=WINDOW_STRIDE,
        kmeans_warmup_steps=params["kmeans_warmup_steps"], **MODEL,
    )  # fmt: skip
    training_args = Stage1TrainingArguments(
        output_dir=params["output_dir"], per_device_train_batch_size=BATCH_SIZE, max_steps=params["max_steps"],
        eval_strategy="no", save_strategy="no", report_to=[], disable_tqdm=True, seed=0, use_cpu=True,
    )  # fmt: skip
    return args, training_args


class MemoryWindows:
    """A training split held in memory: items `{"fmri_values": (R, L), "text_index": int}` as
    `StoreWindows` gives them, from one `(n, R, L)` tensor (a batch fetched by one gather)."""

    def __init__(self, values: Any, text_index: Any) -> None:
        self.values, self.text_index = values, text_index

    def __len__(self) -> int:
        return len(self.text_index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"fmri_values": self.values[int(index)], "text_index": self.text_index[index]}

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        values = self.values[list(map(int, indices))]
        return [
            {"fmri_values": value, "text_index": self.text_index[i]} for value, i in zip(values, indices, strict=True)
        ]


def windows_in_memory(store_folder: str, chunk: int = 256) -> tuple[Any, Any]:
    """The store's training windows as one float32 tensor `(n, R, L)` (read a chunk at a time),
    with the `text_index` of `StoreWindows` (over the sorted train + validation text keys, as `train_stage1`)."""
    import torch

    from modeling_fmrilm.training.common import StoreWindows
    from modeling_fmrilm.window_store import WindowStore

    store = WindowStore.open(store_folder)
    train, validation = store.windows("train"), store.windows("validation")
    text_keys = sorted(set(train["text_key"]) | set(validation["text_key"]))
    text_index = StoreWindows(train, text_keys).text_index
    values = torch.empty((len(train), N_ROIS, WINDOW_LENGTH), dtype=torch.float32)
    numpy_rows = train.select_columns(["fmri_values"]).with_format("numpy")
    for start in range(0, len(train), chunk):
        values[start : start + chunk] = torch.from_numpy(numpy_rows[start : start + chunk]["fmri_values"])
    return values, text_index


def loader_pass(dataset: Any, batches: int, seed: int = 0) -> float:
    """Windows/s of a DataLoader (batches of 16, random order, `WindowCollator`) over `dataset`, without a model."""
    import torch

    from modeling_fmrilm.training.common import WindowCollator

    sampler = torch.utils.data.RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH_SIZE, sampler=sampler, collate_fn=WindowCollator())
    start, seen = time.perf_counter(), 0
    for batch in loader:
        seen += batch["fmri_values"].shape[0]
        if seen >= batches * BATCH_SIZE:
            break
    return seen / (time.perf_counter() - start)


def worker_build(params: dict) -> dict:
    """(a) one store build: wall and CPU seconds, windows, generator seconds per scan, peak RSS."""
    from modeling_fmrilm.window_store import build_window_store

    cohort, extractor = SyntheticCohort(params["n_scans"]), feature_extractor()
    with PeakMemory() as memory:
        wall, cpu = time.perf_counter(), cpu_seconds()
        summary = build_window_store(
            cohort,
            params["folder"],
            extractor,
            shard_size=params["shard_size"],
            num_proc=params["num_proc"],
            progress=False,
        )
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
        peaks = memory.report()
    sample = min(params["n_scans"], 50)
    start = time.perf_counter()
    for index in range(sample):
        cohort[index]
    generator_s = (time.perf_counter() - start) / sample
    store_bytes = sum(p.stat().st_size for p in Path(params["folder"]).rglob("*.arrow"))
    frames = int(extractor.preprocess(synthetic_scan(0), TR).shape[-1])
    return {"wall_s": wall, "resampled_frames": frames, "cpu_s": cpu, "windows": summary.windows, "scans": summary.scans, "generator_s_per_scan": generator_s,
            "store_bytes": store_bytes, **peaks}  # fmt: skip


def worker_stage1_store(params: dict) -> dict:
    """(b) Stage 1 from a store, through `train_stage1`: training-loop seconds, fetch seconds, peak RSS."""
    from modeling_fmrilm.training.common import StoreWindows
    from modeling_fmrilm.training.stage1 import train_stage1

    clock: dict[str, float] = {}
    timed_method(StoreWindows, "__getitems__", clock)
    args, training_args = stage1_arguments(params)
    with PeakMemory() as memory:
        result = train_stage1(args, training_args, callbacks=[train_timer(clock)], console_logs=False)
        peaks = memory.report()
    loss = next((e["train_loss"] for e in reversed(result.history) if "train_loss" in e), float("nan"))
    return {**clock, "train_windows": len(result.trainer.train_dataset), "train_loss": loss, **peaks}


def worker_stage1_memory(params: dict) -> dict:
    """(c) Stage 1 from memory: the same model, seed and steps through `Stage1Trainer` as `train_stage1`
    builds it, fed `MemoryWindows`; then a model-free loader pass over both datasets."""
    from transformers import set_seed

    from modeling_fmrilm.modeling_fmri_tokenizer import FmriTokenizerForPreTraining
    from modeling_fmrilm.training.common import StoreWindows, WindowCollator
    from modeling_fmrilm.training.stage1 import Stage1Trainer, build_config
    from modeling_fmrilm.window_store import WindowStore

    clock: dict[str, float] = {}
    timed_method(MemoryWindows, "__getitems__", clock)
    args, training_args = stage1_arguments(params)
    with PeakMemory() as memory:
        start = time.perf_counter()
        values, text_index = windows_in_memory(params["store"])  # outside the timed part
        read_s = time.perf_counter() - start
        train_data = MemoryWindows(values, text_index)
        training_args.eval_strategy = "no"
        set_seed(training_args.seed)  # as train_stage1: the same weights, then Trainer's seed and sampler order
        model = FmriTokenizerForPreTraining(build_config(args, N_ROIS, None, None))
        trainer = Stage1Trainer(
            model=model, args=training_args, train_dataset=train_data, data_collator=WindowCollator(None),
            callbacks=[train_timer(clock)], console_logs=False,
        )  # fmt: skip
        output = trainer.train()
        peaks = memory.report()
    timed = dict(clock)  # before the loader pass, which fetches too
    store = StoreWindows(WindowStore.open(params["store"]).windows("train"), [])
    batches = params["loader_batches"]
    rates = {
        "loader_memory_windows_per_s": loader_pass(train_data, batches),
        "loader_store_windows_per_s": loader_pass(store, batches),
    }
    return {**timed, "read_s": read_s, "train_windows": len(train_data), "train_loss": output.training_loss,
            "memory_tensor_mb": values.numel() * 4 / 2**20, **rates, **peaks}  # fmt: skip


WORKERS: dict[str, Callable[[dict], dict]] = {
    "build": worker_build,
    "stage1_store": worker_stage1_store,
    "stage1_memory": worker_stage1_memory,
}


def worker_main(kind: str, params: dict, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    print(RESULT + json.dumps(WORKERS[kind](params)), flush=True)


# ---------------------------------------------------------------------------------------------
# the parent


def run_worker(kind: str, params: dict, threads: int) -> dict:
    """`kind` in a fresh Python process (BLAS/OpenMP/torch threads = `threads`); its result dict."""
    env = {**os.environ, **{v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    env["PYTHONWARNINGS"] = env.get("PYTHONWARNINGS", "ignore")
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        kind,
        "--params",
        json.dumps(params),
        "--threads",
        str(threads),
    ]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [line for line in result.stdout.splitlines() if line.startswith(RESULT)]
    if result.returncode != 0 or not lines:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-8000:])
        raise RuntimeError(f"worker {kind} {params}: exit status {result.returncode}")
    value = json.loads(lines[-1][len(RESULT) :])
    value["process_wall_s"] = time.perf_counter() - start
    return value


def say(text: str) -> None:
    print(text, flush=True)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs=2,
        default=None,
        metavar=("SMALL", "LARGE"),
        help=f"cohort sizes in scans (default {DEFAULT_SIZES[0]} {DEFAULT_SIZES[1]})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"sizes {QUICK_SIZES[0]} and {QUICK_SIZES[1]}, 3 steps: a check that the bench runs, not the targets' figures",
    )
    parser.add_argument("--num-proc", type=int, default=1, help="processes of the store build")
    parser.add_argument("--shard-size", type=int, default=16, help="scans per store shard (the library's default)")
    parser.add_argument(
        "--max-steps", type=int, default=None, help="cap of the Stage 1 steps (default 25; 3 with --quick)"
    )
    parser.add_argument(
        "--kmeans-warmup-steps", type=int, default=2, help="Stage 1 steps before the codebook's k-means start"
    )
    parser.add_argument("--loader-batches", type=int, default=100, help="batches of the model-free loader pass")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/torch threads per measured process")
    parser.add_argument("--workdir", default=None, help="parent of the temporary folder (default outputs/bench_scale)")
    parser.add_argument("--keep", action="store_true", help="keep the stores and Stage 1 outputs")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--params", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker_main(args.worker, json.loads(args.params), args.threads)
        return

    sizes = tuple(args.sizes) if args.sizes else QUICK_SIZES if args.quick else DEFAULT_SIZES
    small, large = sorted(sizes)
    max_steps = args.max_steps if args.max_steps is not None else 3 if args.quick else 25
    parent = Path(args.workdir) if args.workdir else ROOT / "outputs" / "bench_scale"
    parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="scale-", dir=parent))
    if sizes != DEFAULT_SIZES:
        say(f"NOTE: sizes {small} and {large}{' (--quick)' if args.quick else ''}, not the targets' {DEFAULT_SIZES[0]} and "
            f"{DEFAULT_SIZES[1]}: the TARGET lines below are for these sizes, not the targets' figures")  # fmt: skip
    if large != 10 * small:
        say(f"NOTE: the sizes are {large / small:.1f}x apart, not 10x")
    say(f"Synthetic cohort: {N_ROIS} ROIs x {N_FRAMES} frames at TR {TR} s (AR(1) + global signal, generated lazily per scan, "
        f"one subject per scan). {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; {args.threads} thread(s) per "
        f"measured process; work folder {workdir}")  # fmt: skip
    try:
        builds = {}
        say(
            f"(a) store build, {args.num_proc} process(es), shards of {args.shard_size} scans, each size in a fresh process"
        )
        for n in (small, large):
            folder = workdir / f"store-{n}"
            builds[n] = b = run_worker(
                "build",
                {"folder": str(folder), "n_scans": n, "num_proc": args.num_proc, "shard_size": args.shard_size},
                args.threads,
            )
            b["scans_per_s"] = n / b["wall_s"] / args.num_proc
            b["scans_per_cpu_s"] = n / b["cpu_s"]
            generator = 2 * n * b["generator_s_per_scan"]
            worker = f", largest worker {b['children_peak_mb']:.0f} MiB" if args.num_proc > 1 else ""
            if n == small:
                say(f"    windows: {WINDOW_LENGTH} frames at TR {TARGET_TR} s, stride {WINDOW_STRIDE or WINDOW_LENGTH} (the paper's): "
                    f"{N_FRAMES} frames at {TR} s resample to {b['resampled_frames']}, one window per scan")  # fmt: skip
            say(f"    {n} scans -> {b['windows']} windows ({b['store_bytes'] / 2**20:.0f} MiB of Arrow files): {b['wall_s']:.1f} s wall, "
                f"{b['cpu_s']:.1f} s CPU = {b['scans_per_s']:.1f} scans/s per process ({b['scans_per_cpu_s']:.1f} per CPU-second); "
                f"the generator's share (2 passes, {1e3 * b['generator_s_per_scan']:.1f} ms a scan) {generator:.1f} s, without it "
                f"{n / max(b['wall_s'] - generator, 1e-9) / args.num_proc:.1f} scans/s; peak RSS {b['peak_rss_mb']:.0f} MiB (heap "
                f"{b['peak_anon_mb']:.0f}, mapped files {b['peak_file_mb']:.0f}){worker}")  # fmt: skip

        small_train = builds[small]["windows"]["train"]
        steps = max(1, min(max_steps, small_train // BATCH_SIZE))  # full batches: the same batch at both sizes
        say(f"(b) Stage 1 from the store, tiny model ({', '.join(f'{k} {v}' for k, v in MODEL.items())}), batches of {BATCH_SIZE}, "
            f"k-means start after {args.kmeans_warmup_steps} steps, no evaluation or checkpoints, 0 loader workers: {steps} steps at "
            f"both sizes (the full batches of one epoch of the {small_train} training windows at {small} scans, capped at --max-steps {max_steps}; the "
            f"larger store holds {builds[large]['windows']['train']} training windows)")  # fmt: skip
        stage1 = {}
        for n in (small, large):
            params = {"store": str(workdir / f"store-{n}"), "output_dir": str(workdir / f"stage1-store-{n}"), "max_steps": steps,
                      "kmeans_warmup_steps": args.kmeans_warmup_steps}  # fmt: skip
            stage1[n] = s = run_worker("stage1_store", params, args.threads)
            s["windows_per_s"] = s["steps"] * BATCH_SIZE / s["train_wall_s"]
            say(f"    {n} scans: {s['steps']} steps in {s['train_wall_s']:.1f} s wall / {s['train_cpu_s']:.1f} s CPU = "
                f"{s['windows_per_s']:.2f} windows/s ({s['steps'] * BATCH_SIZE / s['train_cpu_s']:.2f} per CPU-second); fetching "
                f"batches from the store {1e3 * s['fetch_s'] / s['steps']:.1f} ms a step; train loss {s['train_loss']:.4f}; peak RSS "
                f"{s['peak_rss_mb']:.0f} MiB (heap {s['peak_anon_mb']:.0f}, mapped files {s['peak_file_mb']:.0f})")  # fmt: skip

        say(f"(c) Stage 1 from memory at {large} scans: the same model, seed and {steps} steps through Stage1Trainer, the training "
            "windows read into one tensor before the timed part")  # fmt: skip
        params = {"store": str(workdir / f"store-{large}"), "output_dir": str(workdir / "stage1-memory"), "max_steps": steps,
                  "kmeans_warmup_steps": args.kmeans_warmup_steps, "loader_batches": args.loader_batches}  # fmt: skip
        m = run_worker("stage1_memory", params, args.threads)
        m["windows_per_s"] = m["steps"] * BATCH_SIZE / m["train_wall_s"]
        s = stage1[large]
        say(f"    {m['train_windows']} windows ({m['memory_tensor_mb']:.0f} MiB) read in {m['read_s']:.1f} s; {m['steps']} steps in "
            f"{m['train_wall_s']:.1f} s wall / {m['train_cpu_s']:.1f} s CPU = {m['windows_per_s']:.2f} windows/s "
            f"({m['steps'] * BATCH_SIZE / m['train_cpu_s']:.2f} per CPU-second); fetching batches {1e3 * m['fetch_s'] / m['steps']:.2f} "
            f"ms a step; train loss {m['train_loss']:.4f} (store run: {s['train_loss']:.4f}); peak RSS {m['peak_rss_mb']:.0f} MiB")  # fmt: skip
        cpu_ratio = (s["steps"] / s["train_cpu_s"]) / (m["steps"] / m["train_cpu_s"])
        say(f"    store / memory: {s['windows_per_s'] / m['windows_per_s']:.3f}x wall clock, {cpu_ratio:.3f}x per CPU-second; "
            f"fetch {1e3 * s['fetch_s'] / s['steps']:.1f} vs {1e3 * m['fetch_s'] / m['steps']:.2f} ms of "
            f"{1e3 * s['train_wall_s'] / s['steps']:.0f} ms a step")  # fmt: skip
        say(f"    model-free loader pass ({args.loader_batches} batches of {BATCH_SIZE}, random order, WindowCollator): store "
            f"{m['loader_store_windows_per_s']:.0f} windows/s, memory {m['loader_memory_windows_per_s']:.0f} windows/s")  # fmt: skip
    finally:
        if args.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    build_growth = builds[large]["peak_rss_mb"] / builds[small]["peak_rss_mb"]
    stage1_growth = stage1[large]["peak_rss_mb"] / stage1[small]["peak_rss_mb"]
    rate = builds[large]["scans_per_s"] / MIN_SCANS_PER_S
    versus = stage1[large]["windows_per_s"] / m["windows_per_s"]
    say(
        f"TARGET store_build_peak_rss_growth: ratio {build_growth:.2f}x (target <= {MAX_RSS_GROWTH:.2f}x) {verdict(build_growth <= MAX_RSS_GROWTH)}"
    )
    say(
        f"TARGET stage1_store_peak_rss_growth: ratio {stage1_growth:.2f}x (target <= {MAX_RSS_GROWTH:.2f}x) {verdict(stage1_growth <= MAX_RSS_GROWTH)}"
    )
    say(f"TARGET store_build_scans_per_s: ratio {rate:.2f}x (target >= 1.00x) {verdict(rate >= 1.0)}")
    say(
        f"TARGET stage1_store_vs_memory: ratio {versus:.2f}x (target >= {MIN_STORE_VS_MEMORY:.2f}x) {verdict(versus >= MIN_STORE_VS_MEMORY)}"
    )


if __name__ == "__main__":
    main()
