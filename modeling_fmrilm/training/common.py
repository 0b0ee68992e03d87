"""What the stages share on top of `transformers.Trainer`: the cohort and its subject split, window
datasets, checkpoint lookup, argument parsing, the claim on the output folder and the atomic final save."""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np
import torch
from transformers import HfArgumentParser, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer import FSDP_MODEL_NAME, TRAINING_ARGS_NAME
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, IntervalStrategy, SaveStrategy, SchedulerType
from transformers.utils import ADAPTER_SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

from ..atomic import replace_folder
from ..errors import FmriInputError
from ..feature_extraction_fmrilm import FmriFeatureExtractor
from ..io import FmriScan, load_embedded, load_scans
from ..locking import folder_lock
from ..sharded_build import ScanInfo
from ..splits import DEFAULT_FRACTIONS, MANIFEST_NAME, SubjectSplit, resolve_split, subject_key, text_key
from ..window_store import WindowStore, build_window_store


def scan_subject_key(scan: FmriScan) -> str:
    """The unit of splitting of a scan: `dataset/subject`."""
    return subject_key(scan.dataset, scan.subject)


def scan_text_key(scan: FmriScan) -> str:
    """The key of a scan's text: `dataset/subject[/session]`."""
    return text_key(scan.dataset, scan.subject, scan.session)


def scan_store_key(scan: FmriScan) -> str:
    """A scan's id in a window store's `scan` column: `dataset/subject[/session]/file name`."""
    return ScanInfo.of(0, scan).key


def load_cohort(
    data_dir: str | None, tr: float | None = None, key: str | None = None, cohorts: Sequence[str] = ("hcp", "gw")
) -> list[FmriScan]:
    """The scans of `data_dir` (any folder the readers load) or, without one, the embedded cohorts."""
    scans = load_scans(data_dir, tr=tr, key=key) if data_dir else load_embedded(tuple(cohorts))
    counts = sorted({scan.n_rois for scan in scans})
    if len(counts) > 1:
        raise FmriInputError(f"{data_dir or 'embedded data'}: expected one ROI count for every scan, found {counts}")
    return scans


def cohort_split(
    scans: Sequence[FmriScan], manifest: str | None, fractions: Sequence[float], seed: int
) -> SubjectSplit:
    """The one subject split of `scans`: from a manifest (a corpus folder or `splits.json`) when
    given, else by the seeded hash of each `dataset/subject` (`modeling_fmrilm.splits`)."""
    split = resolve_split([scan_subject_key(scan) for scan in scans], manifest, fractions, seed)
    if not split.subjects("train"):
        raise FmriInputError(
            f"subject split ({manifest or f'fractions {tuple(fractions)}, seed {seed}'}): no training subject"
        )
    return split


def manifest_of(folder: str | None) -> str | None:
    """`folder` when it holds a split manifest (e.g. the descriptor corpus), else `None`."""
    return folder if folder is not None and (Path(folder) / MANIFEST_NAME).is_file() else None


class StoreWindows(torch.utils.data.Dataset):
    """One split of a window store (`modeling_fmrilm.window_store`), memory-mapped: items
    `{"fmri_values": (n_rois, window_length), "text_index": int}`, fetched a batch at a time
    (`__getitems__`, which torch's DataLoader calls) straight from the Arrow files.

    `text_index` points into `text_keys`, the list of text keys (`dataset/subject[/session]`) the
    dataset was built with (-1 for a window whose key is not listed); `subject_keys[i]` is window
    `i`'s subject.
    """

    def __init__(self, windows: Any, text_keys: Sequence[str]) -> None:
        self.windows = windows.select_columns(["fmri_values"]).with_format("torch")
        self.subject_keys = list(windows["subject_key"])
        position = {key: i for i, key in enumerate(text_keys)}
        self.text_index = torch.tensor([position.get(key, -1) for key in windows["text_key"]], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.text_index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"fmri_values": self.windows[int(index)]["fmri_values"], "text_index": self.text_index[index]}

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        values = self.windows[list(map(int, indices))]["fmri_values"]
        return [
            {"fmri_values": value, "text_index": self.text_index[i]} for value, i in zip(values, indices, strict=True)
        ]


STORE_DIR = "window_store"


WINDOWING = ("num_rois", "target_tr", "window_length")
"""What a run's windows must share with the store's (the stride is checked apart: `store_windows`)."""


def preprocessing_fields(extractor: FmriFeatureExtractor) -> list[str]:
    """Every preprocessing setting of `extractor` but its window stride (what a stage reading a
    store made for a trained tokenizer checks, `check_store_extractor`)."""
    return [
        name for name in extractor.to_dict() if name not in ("window_stride", "feature_extractor_type", "auto_map")
    ]


def check_store_extractor(
    store: WindowStore, expected: FmriFeatureExtractor, fields: Sequence[str] = WINDOWING
) -> None:
    """Refuse a store whose feature extractor differs from `expected` in `fields` (naming each),
    or whose window stride does not divide `expected`'s (a run reads every window of the store
    that starts on its own stride, `store_windows`).

    Raises:
        FmriInputError: naming the store, each differing field and both values.
    """
    made, wanted = store.feature_extractor, expected
    differing = [
        f"{name} {getattr(made, name)!r} (asked for {getattr(wanted, name)!r})"
        for name in fields
        if getattr(made, name) != getattr(wanted, name)
    ]
    if wanted.stride % made.stride:
        differing.append(f"window_stride {made.stride} (asked for {wanted.stride}, which it does not divide)")
    if differing:
        raise FmriInputError(
            f"{store.location}: the window store was made with {', '.join(differing)}; pass the store's values or build a store with these"
        )


def store_windows(store: WindowStore, splits: Sequence[str], stride: int) -> Any:
    """The windows of `splits` (concatenated in that order) that start every `stride` frames, as
    a memory-mapped `datasets.Dataset` (an index selection on the store when the stride is
    coarser than the store's, no copy)."""
    import datasets

    windows = [store.windows(split) for split in splits]
    joined = windows[0] if len(windows) == 1 else datasets.concatenate_datasets(windows)
    if stride == store.feature_extractor.stride:
        return joined
    starts = np.asarray(joined.with_format("numpy")["window_start"])
    return joined.select(np.flatnonzero(starts % stride == 0), keep_in_memory=True)


def training_store(
    args: CohortArguments, training_args: TrainingArguments, extractor: FmriFeatureExtractor, manifest: str | None,
    scans: Sequence[FmriScan] | None = None, fields: Sequence[str] = WINDOWING,
) -> WindowStore:  # fmt: skip
    """The window store a stage reads: `--window_store` when given (`open_checked_store`, its split
    checked against `manifest`'s when one is given), else one built with `extractor` into
    `output_dir/window_store` from the training and validation subjects' scans of `scans` or of
    the cohort (`--data_dir` or the embedded data; the test subjects' scans are not read;
    `build_run_store`).

    Raises:
        FmriInputError: the store's windows or split disagree with the run's, or no scan.
    """
    if args.window_store is not None and args.data_dir is not None:
        raise FmriInputError(
            f"--window_store and --data_dir: expected one (the store {args.window_store} or the scans of {args.data_dir}), found both"
        )
    if args.window_store is not None:
        store = open_checked_store(args.window_store, extractor, fields)
        if manifest is not None:
            check_store_split(
                store, resolve_split(store.split.assignment, manifest), f"{manifest}'s", f"--split-manifest {manifest}"
            )
        return store
    scans = list(scans) if scans is not None else load_cohort(args.data_dir, args.tr, args.key, args.cohorts)
    split = cohort_split(scans, manifest, args.split_fractions, args.split_seed)
    seen = set(split.subjects("train")) | set(split.subjects("validation"))
    return build_run_store([scan for scan in scans if scan_subject_key(scan) in seen], split, extractor, training_args)


def open_checked_store(
    location: str, extractor: FmriFeatureExtractor, fields: Sequence[str] = WINDOWING
) -> WindowStore:
    """The window store at `location` (a folder or Hub dataset id), its feature extractor checked
    against `extractor` in those of `fields` that `extractor` sets, and in stride (`check_store_extractor`)."""
    store = WindowStore.open(location)
    check_store_extractor(store, extractor, [name for name in fields if getattr(extractor, name) is not None])
    return store


def check_store_split(store: WindowStore, expected: SubjectSplit, whose: str, remedy: str) -> None:
    """Refuse a store whose split puts a subject elsewhere than `expected` does.

    Raises:
        FmriInputError: naming the store, `whose` split it differs from, up to five such subjects and the `remedy` flag.
    """
    moved = sorted(key for key, value in store.split.assignment.items() if expected.of(key) != value)
    if moved:
        raise FmriInputError(
            f"{store.location}: its subject split differs from {whose} for {len(moved)} subject(s) ({moved[:5]}); build the store with {remedy}"
        )


def build_run_store(
    scans: Sequence[FmriScan], split: SubjectSplit, extractor: FmriFeatureExtractor, training_args: TrainingArguments
) -> WindowStore:
    """The window store of `scans` (split as `split` assigns them) built with `extractor` into
    `output_dir/window_store`. The main process builds it while the others wait
    (`main_process_first`); a folder that already holds the store of the same scans and settings
    is reused.

    Raises:
        FmriInputError: no scan.
    """
    if not scans:
        raise FmriInputError("window store: no scan of a training or validation subject to build it from")
    if extractor.num_rois is None:
        extractor = copy.deepcopy(extractor)
        extractor.num_rois = scans[0].n_rois
    folder = Path(training_args.output_dir) / STORE_DIR
    with training_args.main_process_first(desc="building the window store"):
        if training_args.process_index == 0:
            build_window_store(scans, folder, extractor, split_manifest=split, progress=False)
    return WindowStore.open(folder)


@dataclass
class WindowCollator:
    """Stacks window items into `fmri_values` `(batch, n_rois, window_length)` and, when a text table
    `(n_text_keys, dim)` is given, adds each window's `text_embeds` `(batch, dim)`."""

    text_embeds: torch.Tensor | None = None

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = {"fmri_values": torch.stack([item["fmri_values"] for item in items])}
        if self.text_embeds is not None:
            batch["text_embeds"] = self.text_embeds[torch.stack([item["text_index"] for item in items])]
        return batch


def _readable_state(folder: Path) -> bool:
    """Whether `folder/trainer_state.json` exists and parses (Trainer writes it last in a checkpoint)."""
    try:
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The highest `checkpoint-N` under `output_dir` that was written to the end.

    Trainer writes `trainer_state.json` last, so a folder without a readable one was interrupted
    mid-save and is skipped (Trainer's own `get_last_checkpoint` would pick it and fail on resume).
    """
    folder = Path(output_dir)
    steps = []
    for child in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if folder.is_dir() else []:
        suffix = child.name.rsplit("-", 1)[-1]
        if suffix.isdigit() and _readable_state(child):
            steps.append((int(suffix), str(child)))
    return max(steps)[1] if steps else None


MODEL_STATE_NAMES = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, ADAPTER_SAFE_WEIGHTS_NAME)
"""The files of a checkpoint's model state (safetensors weights, whole, sharded or a peft adapter);
FSDP and DeepSpeed write theirs as `pytorch_model_fsdp*` and `global_step*`."""


def _has_model_state(folder: Path) -> bool:
    return any((folder / name).is_file() for name in MODEL_STATE_NAMES) or any(
        child.name.startswith(FSDP_MODEL_NAME) or (child.is_dir() and child.name.startswith("global_step"))
        for child in folder.iterdir()
    )


def check_checkpoint(folder: str | Path) -> None:
    """Check that a resume finds what it reads and that every file is whole, cheaply: the model
    state (`MODEL_STATE_NAMES`), safetensors headers against the file size, the zip directory of
    `.pt`/`.pth`/`.bin` files, the JSON files.

    Raises:
        FmriInputError: naming the folder and what is missing, or the first truncated or corrupt
            file and what was wrong.
    """
    import zipfile

    from safetensors import safe_open

    folder = Path(folder)
    if not _readable_state(folder):
        raise FmriInputError(
            f"{folder / 'trainer_state.json'}: expected the JSON Trainer writes last in a checkpoint; missing or unreadable"
        )
    if not _has_model_state(folder):
        raise FmriInputError(
            f"{folder}: expected a Trainer checkpoint with its model weights ({' or '.join(MODEL_STATE_NAMES)}, or an FSDP/DeepSpeed "
            f"state folder), found only {sorted(path.name for path in folder.iterdir())}"
        )
    for path in sorted(folder.iterdir()):
        try:
            if path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt") as handle:
                    keys = list(handle.keys())
                    if keys:
                        handle.get_slice(keys[-1])
            elif path.suffix in (".pt", ".pth", ".bin"):
                with zipfile.ZipFile(path) as archive:
                    archive.infolist()
            elif path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
        except Exception as error:  # noqa: BLE001 - every reader's own error becomes one that names the file
            raise FmriInputError(
                f"{path}: truncated or corrupt checkpoint file ({type(error).__name__}: {error})"
            ) from None


def resolve_resume(resume_from_checkpoint: str | None, output_dir: str) -> str | None:
    """`--resume_from_checkpoint`: a folder, or `latest`/`true` for the last complete checkpoint
    (`None` when there is none yet, so a first run and its restart share one command line).
    The chosen checkpoint is checked (`check_checkpoint`) before Trainer reads it."""
    if resume_from_checkpoint is None or resume_from_checkpoint.lower() in ("", "false", "no"):
        return None
    if resume_from_checkpoint.lower() in ("latest", "true", "yes"):
        chosen = last_complete_checkpoint(output_dir)
    else:
        chosen = resume_from_checkpoint
        if not Path(chosen).is_dir():
            raise FmriInputError(
                f"resume_from_checkpoint: expected a Trainer checkpoint folder, found no folder {chosen}"
            )
    if chosen is not None:
        check_checkpoint(chosen)
    return chosen


FINAL_NAME = "final"
TRAINING_ARGS_JSON = "training_args.json"
P = ParamSpec("P")
R = TypeVar("R")


def claims_output_dir(train: Callable[P, R]) -> Callable[P, R]:
    """Decorate a stage's `train_stageN(args, training_args, ...)`: the main process holds the lock
    of `training_args.output_dir` (`modeling_fmrilm.locking`) for the whole run, and a finished
    `output_dir/final` is replaced only with `--overwrite_final` or by a run that resumes from a
    checkpoint (`--resume_from_checkpoint`, which is resolved and checked here, before any data
    is read).

    Raises:
        FmriInputError: another run holds the folder, `final/` is there and neither flag allows
            replacing it, or the checkpoint to resume from is missing or incomplete.
    """

    @functools.wraps(train)
    def claimed(*arguments: P.args, **keywords: P.kwargs) -> R:
        training_args = keywords["training_args"] if "training_args" in keywords else arguments[1]
        output_dir = Path(training_args.output_dir)
        with (
            folder_lock(output_dir, "a training run") if training_args.process_index == 0 else contextlib.nullcontext()
        ):
            resumed = resolve_resume(training_args.resume_from_checkpoint, str(output_dir))
            if (output_dir / FINAL_NAME).exists() and resumed is None and not training_args.overwrite_final:
                raise FmriInputError(
                    f"{output_dir / FINAL_NAME}: expected no finished model in the output folder, found one; pass --overwrite_final to "
                    "replace it, --resume_from_checkpoint to continue from a checkpoint, or choose another --output_dir"
                )
            training_args.resume_from_checkpoint = resumed
            return train(*arguments, **keywords)

    return claimed


def save_final(
    trainer: Trainer,
    final_dir: str | Path,
    extra_savers: Sequence[Callable[[Path], None]] = (),
    record: dict | None = None,
) -> Path:
    """Save the trained model through Trainer's own path (which gathers FSDP2/ZeRO-3 shards) into a
    staging folder, then rename it to `final_dir` on the main process: an interruption leaves the
    previous folder or the new one, never half of one.

    Every process must call this (the state-dict gathering is collective). `extra_savers` write
    more into the staging folder (feature extractor, processor, tokenizer); `record` is written as
    `training_record.json`. The training arguments are kept as JSON (`training_args.json`), not as
    Trainer's pickle (`training_args.bin` stays in the checkpoints, which a resume reads).
    """
    final_dir = Path(final_dir)
    staging = final_dir.with_name(f".{final_dir.name}-staging")
    if trainer.is_world_process_zero():
        shutil.rmtree(staging, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    if trainer.is_fsdp_enabled:  # checkpoints may be sharded; the final folder holds the whole model
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(staging))
    if trainer.is_world_process_zero():
        (staging / TRAINING_ARGS_NAME).unlink(missing_ok=True)
        (staging / TRAINING_ARGS_JSON).write_text(trainer.args.to_json_string())
        for saver in extra_savers:
            saver(staging)
        if record is not None:
            (staging / "training_record.json").write_text(json.dumps(record, indent=2, default=str))
        replace_folder(staging, final_dir)
    trainer.accelerator.wait_for_everyone()
    return final_dir


def digests_across_processes(trainer: Trainer, tensor: torch.Tensor) -> list[str]:
    """SHA-256 of `tensor`'s bytes on every process, in rank order (collective: every process calls it).

    Used to check that state every rank must share (the EMA codebook) is bit-identical."""
    digest = hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).digest()
    local = torch.tensor(list(digest), dtype=torch.uint8, device=trainer.args.device)[None]
    gathered = trainer.accelerator.gather(local) if trainer.accelerator.num_processes > 1 else local
    return [bytes(row.tolist()).hex() for row in gathered.cpu()]


class BatchSums:
    """Named float64 sums over batches (fixed names and sizes), summed over processes on `reduce`."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self.sizes = dict(sizes)
        self.reset()

    def reset(self) -> None:
        self.values = {name: torch.zeros(size, dtype=torch.float64) for name, size in self.sizes.items()}

    @torch.no_grad()
    def add(self, **values: torch.Tensor | float) -> None:
        for name, value in values.items():
            self.values[name] += torch.as_tensor(value).detach().to("cpu", torch.float64).reshape(-1)

    def reduce(self, accelerator: Any) -> dict[str, torch.Tensor]:
        """The sums of every process since the last call (collective: every process calls it), then reset."""
        flat = torch.cat([self.values[name] for name in self.sizes]).to(accelerator.device)
        if accelerator.num_processes > 1:
            flat = accelerator.reduce(flat, reduction="sum")
        self.reset()
        return dict(zip(self.sizes, flat.cpu().split(list(self.sizes.values())), strict=True))


@dataclass
class CohortArguments:
    """Where a stage's scans come from and how their subjects are split (shared by the stages)."""

    data_dir: str | None = field(
        default=None, metadata={"help": "folder of scans the readers load; default: the embedded data"}
    )
    window_store: str | None = field(
        default=None,
        metadata={
            "help": "window store (fmrilm preprocess --output-dir) to read instead of --data_dir: a folder or Hub dataset id"
        },
    )
    tr: float | None = field(default=None, metadata={"help": "repetition time when the files carry none"})
    key: str | None = field(default=None, metadata={"help": "variable/array holding the time series"})
    cohorts: list[str] = field(default_factory=lambda: ["hcp", "gw"], metadata={"help": "embedded cohorts to use"})
    split_manifest: str | None = field(
        default=None,
        metadata={
            "help": "splits.json or a folder holding one; default: the corpus's (the text dataset's in Stage 1), "
            "else the seeded hash of dataset/subject"
        },
    )
    split_fractions: list[float] = field(
        default_factory=lambda: list(DEFAULT_FRACTIONS),
        metadata={"help": "train/validation/test fractions without a manifest"},
    )
    split_seed: int = field(default=0, metadata={"help": "seed of the subject split without a manifest"})


@dataclass
class StageTrainingArguments(TrainingArguments):
    """`TrainingArguments` with what every stage shares (each stage sets its own sizes and rates)."""

    lr_scheduler_type: SchedulerType | str = field(default="cosine", metadata={"help": "learning-rate schedule"})
    eval_strategy: IntervalStrategy | str = field(
        default="epoch", metadata={"help": "evaluate on the validation subjects every epoch"}
    )
    save_strategy: SaveStrategy | str = field(default="epoch", metadata={"help": "write a checkpoint every epoch"})
    save_total_limit: int | None = field(default=2, metadata={"help": "checkpoints kept"})
    logging_strategy: IntervalStrategy | str = field(default="epoch", metadata={"help": "log every epoch"})
    prediction_loss_only: bool = field(
        default=True, metadata={"help": "evaluation keeps no predictions (metrics are accumulated)"}
    )
    remove_unused_columns: bool = field(default=False, metadata={"help": "the collator builds the model inputs"})
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata={"help": "every trainable weight is used, so DDP needs no search"}
    )
    overwrite_final: bool = field(
        default=False,
        metadata={
            "help": "replace a finished output_dir/final (without it such a run stops before training, unless it resumes)"
        },
    )


@dataclass
class CodeDropoutArguments:
    """The code-stream dropout of a stage that trains a model reading both streams (see `FmriLMConfig.code_dropout`)."""

    code_dropout: float = field(
        default=0.0,
        metadata={
            "help": "probability that a training sequence's code tokens are all replaced by <fmri_pad>, so it is read from its connectivity tokens alone (both-stream models)"
        },
    )
    code_dropout_fraction: float = field(
        default=0.5,
        metadata={
            "help": "the first fraction of the training steps that code_dropout applies to; the rest see every code token"
        },
    )

    def __post_init__(self) -> None:
        for name in ("code_dropout", "code_dropout_fraction"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise FmriInputError(f"{name}: expected a number in [0, 1], found {value!r}")


def calibrate_on_training_windows(
    model: Any, connectivity: Any, example_windows: Iterable[Sequence[int]], n_windows: int = 256
) -> float:
    """`model.calibrate_connectivity_projector` on the connectivity rows of up to about `n_windows`
    windows spread over those the training examples read (`example_windows`: each example's
    `fmri_windows`, rows of `connectivity`). Returns the factor applied."""
    windows = sorted({window for rows in example_windows for window in rows})
    if not windows:
        raise FmriInputError(
            "training examples: none reads a window, so the connectivity projector has nothing to be calibrated on"
        )
    return model.calibrate_connectivity_projector(
        torch.as_tensor(np.asarray(connectivity[windows[:: max(1, len(windows) // n_windows)]]))
    )


def code_dropout_callbacks(args: CodeDropoutArguments, config: Any) -> list[TrainerCallback]:
    """The stage's [`CodeDropoutSchedule`] (none without code dropout).

    Raises:
        FmriInputError: code dropout asked of a model without the connectivity stream (it would read nothing).
    """
    if args.code_dropout == 0:
        return []
    if not config.reads_connectivity:
        raise FmriInputError(
            f"code_dropout: {args.code_dropout} asked of a model that reads only {config.fmri_streams}: its dropped sequences would hold no fMRI; "
            "use it with fmri_streams including 'connectivity'"
        )
    return [CodeDropoutSchedule(config, args.code_dropout, args.code_dropout_fraction)]


class CodeDropoutSchedule(TrainerCallback):
    """Sets `config.code_dropout` to `probability` for the first `fraction` of the training steps
    and to 0 after them (and at the end, so the saved config trains nothing further with it).

    The idea: let a model reading both streams first learn its connectivity tokens with the code
    tokens (which differ from subject to subject as much as the connectivity rows and outnumber
    them) out of the way, then read them beside the codes. `bench/streams.py` measures it on the
    Stage 3 recipe: with it the model read a coupling effect on two of three cohort seeds, without
    it on none."""

    def __init__(self, config: Any, probability: float, fraction: float) -> None:
        self.config, self.probability, self.fraction = config, float(probability), float(fraction)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        on = state.global_step < self.fraction * state.max_steps
        self.config.code_dropout = self.probability if on else 0.0

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.config.code_dropout = 0.0


class ProgressBars(ProgressCallback):
    """Trainer's progress bars without the log dictionaries printed under them."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        return None


class SumLoggingTrainer(Trainer):
    """A Trainer whose `compute_loss` adds per-batch sums (`self.sums["train"|"eval"].add(...)`) and
    whose `log` turns them into metrics (`summarize`) in the training and evaluation logs.

    Trainer logs only the total loss; these metrics (loss components, codebook use, per-objective
    losses) then reach the console, `trainer_state.json`, the reporting integrations and
    `metric_for_best_model` alike, under the prefix the evaluation was asked for (`eval_`, `test_`,
    `eval_<name>_` for a dict of evaluation sets). Evaluation is told to compute the loss even where
    the model takes no labels (`can_return_loss`), and Trainer that `compute_loss` returns a
    per-batch mean it must divide by the gradient-accumulation steps (`loss_is_scaled_for_ga`).
    """

    sum_sizes: dict[str, int] = {}
    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, console_logs: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not console_logs:  # progress bars only: the logs still reach trainer_state.json and the integrations
            self.remove_callback(PrinterCallback)
            self.remove_callback(ProgressCallback)
            self.add_callback(ProgressBars())
        self.can_return_loss = True
        self.sums = {"train": BatchSums(self.sum_sizes), "eval": BatchSums(self.sum_sizes)}
        self.metric_key_prefix: str | None = None  # set while `evaluate` runs

    def summarize(self, sums: dict[str, torch.Tensor], prefix: str) -> dict[str, float]:
        """Metrics from the reduced sums; `prefix` is `""` for training logs and the evaluation's
        `metric_key_prefix` and `_` (`"eval_"` by default) for evaluation logs."""
        raise NotImplementedError

    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        """Trainer's `evaluate`; its one log of the metrics (see `log`) gains the sums of its batches."""
        outer, self.metric_key_prefix = self.metric_key_prefix, metric_key_prefix
        try:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        finally:
            self.metric_key_prefix = outer

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the summarised sums: an evaluation's (the log `evaluate` makes) or the training steps'
        since the last training log (Trainer's `logging_steps` logs, the ones with `loss`)."""
        if self.metric_key_prefix is not None:
            logs.update(self.summarize(self.sums["eval"].reduce(self.accelerator), f"{self.metric_key_prefix}_"))
        elif "loss" in logs:
            logs.update(self.summarize(self.sums["train"].reduce(self.accelerator), ""))
        super().log(logs, start_time)


@contextlib.contextmanager
def process_group_destroyed_on_exit() -> Iterator[None]:
    """Wrap a recipe's `main`: the `torch.distributed` process group that Trainer's launch created is
    destroyed before the interpreter shuts down, however the run ends. Left to interpreter shutdown,
    gloo's worker threads can outlive Python and abort the process (SIGABRT, "terminate called
    without an active exception") after the model was already saved."""
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def parse_arguments(types: tuple[type, ...], argv: Sequence[str] | None = None) -> tuple[Any, ...]:
    """Parse dataclasses with `HfArgumentParser`: `--flag_name` and `--flag-name` both work; a single
    `.json`/`.yaml` argument is read as a file of arguments."""
    parser = HfArgumentParser(types)
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(argv[0])
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(argv[0])
    return parser.parse_args_into_dataclasses(argv)


__all__ = [
    "STORE_DIR",
    "WINDOWING",
    "BatchSums",
    "CodeDropoutArguments",
    "CodeDropoutSchedule",
    "CohortArguments",
    "ProgressBars",
    "StageTrainingArguments",
    "StoreWindows",
    "SumLoggingTrainer",
    "WindowCollator",
    "build_run_store",
    "calibrate_on_training_windows",
    "check_checkpoint",
    "check_store_extractor",
    "check_store_split",
    "claims_output_dir",
    "code_dropout_callbacks",
    "cohort_split",
    "digests_across_processes",
    "last_complete_checkpoint",
    "load_cohort",
    "manifest_of",
    "open_checked_store",
    "parse_arguments",
    "preprocessing_fields",
    "process_group_destroyed_on_exit",
    "resolve_resume",
    "save_final",
    "scan_store_key",
    "scan_subject_key",
    "scan_text_key",
    "store_windows",
    "training_store",
]
