"""What the sharded builders share (the descriptor corpus, `descriptors.corpus`, and the window
store, `window_store`): a survey of the scans into a `BuildPlan` that every share and the merge
agree on, and access to the plan's scans from a sequence or a re-iterable source.

A plan lists each usable scan (`ScanInfo`: position in the source, name, subject, session,
dataset, TR, length, split) and the builder's configuration; its shards are `shard_size`
consecutive scans, and shard `k` belongs to share `k % num_shards`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .atomic import replace_folder, write_atomically
from .errors import FmriInputError
from .io import FmriScan
from .splits import SubjectSplit, subject_key, text_key

logger = logging.getLogger(__name__)

PLAN_NAME = "plan.json"
ScanSource = Sequence[FmriScan] | Callable[[], Iterable[FmriScan]]
"""A sequence of scans (may be lazy: only the needed items are read), or a callable returning a
fresh iterator over them (re-read once per pass, in the same order)."""


@dataclass
class ScanInfo:
    """What the survey pass keeps of a scan (the data is re-read later)."""

    index: int
    name: str
    subject: str
    session: str | None
    dataset: str
    tr: float
    n_timepoints: int
    split: str = ""

    @classmethod
    def of(cls, index: int, scan: FmriScan) -> ScanInfo:
        """The info of `scan`, at position `index` of its source."""
        return cls(index, scan.name, scan.subject, scan.session, scan.dataset, float(scan.tr), scan.n_timepoints)

    @property
    def key(self) -> str:
        """Machine-independent scan id, `dataset/subject[/session]/file name` (an absolute path
        would differ between machines)."""
        return "/".join(part for part in (self.text_key, Path(self.name).name) if part)

    @property
    def text_key(self) -> str:
        """`dataset/subject[/session]`: the key of this scan's text (`modeling_fmrilm.splits.text_key`)."""
        return text_key(self.dataset, self.subject, self.session)

    @property
    def subject_key(self) -> str:
        """`dataset/subject`: the unit of the split."""
        return subject_key(self.dataset, self.subject)


@dataclass
class BuildPlan:
    """The surveyed scans, their split and the configuration: what every share and the merge agree on."""

    infos: list[ScanInfo]
    split: SubjectSplit
    config: dict
    skipped: list[str] = field(default_factory=list)

    @property
    def shards(self) -> list[list[ScanInfo]]:
        size = self.config["shard_size"]
        return [self.infos[i : i + size] for i in range(0, len(self.infos), size)]

    @property
    def fingerprint(self) -> str:
        state = {"scans": [asdict(i) for i in self.infos], "split": self.split.to_json(), "config": self.config}
        return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()

    def save(self, work: Path) -> None:
        content = {
            "fingerprint": self.fingerprint,
            "config": self.config,
            "split": self.split.to_json(),
            "scans": [asdict(i) for i in self.infos],
            "skipped": self.skipped,
        }
        write_atomically(work / PLAN_NAME, lambda handle: handle.write(json.dumps(content).encode()))

    def install(self, work: Path, folder: str) -> None:
        """Save this plan into `work` (and make `work/folder` for its shards), first clearing `work`
        when it holds another plan's state (other scans, split or settings); the finished shards of
        the same plan are kept, so that a rerun resumes."""
        if work.exists():
            previous = json.loads((work / PLAN_NAME).read_text()) if (work / PLAN_NAME).is_file() else {}
            if previous.get("fingerprint") != self.fingerprint:
                shutil.rmtree(work)
        (work / folder).mkdir(parents=True, exist_ok=True)
        self.save(work)

    @classmethod
    def load(
        cls, work: Path, expected_config: dict | None = None, prepare_hint: str = "prepare the build first"
    ) -> BuildPlan:
        """The plan in `work`; with `expected_config`, refuses one prepared with another configuration.

        Raises:
            FmriInputError: no plan in `work` (the message ends with `prepare_hint`), or one
                prepared with another configuration (naming the keys that differ).
        """
        path = work / PLAN_NAME
        if not path.is_file():
            raise FmriInputError(f"{path}: no build plan there; {prepare_hint}")
        content = json.loads(path.read_text())
        split = content["split"]
        plan = cls(
            [ScanInfo(**info) for info in content["scans"]],
            SubjectSplit(split["subjects"], split["seed"], tuple(split["fractions"])),
            content["config"],
            content["skipped"],
        )
        if expected_config is not None and plan.config != expected_config:
            differing = sorted(k for k in expected_config if plan.config.get(k) != expected_config[k])
            raise FmriInputError(
                f"{path}: prepared with other {', '.join(differing)} than asked for now "
                f"(prepared: {json.dumps({k: plan.config.get(k) for k in differing})[:500]}); "
                "use the arguments of the preparation, or prepare again"
            )
        return plan


def iter_source(source: ScanSource) -> Iterator[FmriScan]:
    """A fresh pass over `source`."""
    return iter(source() if callable(source) else source)


def selected_scans(source: ScanSource, wanted: Iterable[int]) -> Iterator[tuple[int, FmriScan]]:
    """`(position, scan)` for the wanted positions in order: indexed in a sequence (a lazy one reads
    only those files), filtered from a fresh iterator otherwise (which stops after the last one)."""
    wanted = sorted(set(wanted))
    if isinstance(source, Sequence):
        yield from ((index, source[index]) for index in wanted)
        return
    chosen = set(wanted)
    for index, scan in enumerate(iter_source(source) if chosen else ()):
        if index in chosen:
            chosen.discard(index)
            yield index, scan
            if not chosen:
                return


def _scan_loaders(source: ScanSource) -> Iterator[tuple[int, Callable[[], FmriScan]]]:
    """`(position, read)` for every scan of `source`: from a sequence each item is read on its own
    (so an unreadable file is one bad scan), from an iterator in turn."""
    if isinstance(source, Sequence):
        yield from ((index, functools.partial(source.__getitem__, index)) for index in range(len(source)))
        return
    for index, scan in enumerate(iter_source(source)):
        yield index, lambda scan=scan: scan


def survey_scans(
    source: ScanSource, validate: Callable[[FmriScan], None], skip_bad: bool = False, progress: bool = True
) -> tuple[list[ScanInfo], list[str]]:
    """Read every scan once and `validate` it (raising `FmriInputError` for a bad one); returns the
    good scans' infos and, with `skip_bad`, one message per skipped scan (also printed to stderr).
    With a sequence source, a reader's `FmriInputError` (an unreadable file) is a bad scan too."""
    infos, skipped = [], []
    for index, read in tqdm(_scan_loaders(source), desc="checking scans", unit="scan", disable=not progress):
        try:
            scan = read()
            validate(scan)
        except FmriInputError as error:
            if not skip_bad:
                raise
            skipped.append(str(error))
            logger.warning(f"skipped: {error}")
            continue
        infos.append(ScanInfo.of(index, scan))
    return infos, skipped


def run_shards(
    source: ScanSource,
    plan: BuildPlan,
    todo: Sequence[int],
    task: Callable[[int, list[ScanInfo], list[FmriScan]], Any],
    on_done: Callable[[int, Any], None],
    num_proc: int = 1,
    progress: bool = True,
    desc: str = "shards",
    plan_path: Path | str = PLAN_NAME,
) -> None:
    """Read the scans of shards `todo` from `source` (each scan once, in order, its name checked
    against the plan's) and, as each shard is complete, run `task(k, infos, scans)`: in this
    process, or on `num_proc` worker processes (`task` must then pickle: a module-level function
    or a `functools.partial` of one), with at most two shards per worker in flight so that memory
    stays bounded. `on_done(k, result)` runs in this process, in order of completion.

    Raises:
        FmriInputError: a scan of `source` is not the one the plan lists at its position (the
            source changed since the plan, at `plan_path`, was made).
    """
    shards = plan.shards
    place = {info.index: (k, row) for k in todo for row, info in enumerate(shards[k])}
    pending: dict[int, dict[int, FmriScan]] = {k: {} for k in todo}
    bar = tqdm(total=len(todo), desc=desc, unit="shard", disable=not progress)
    executor = ProcessPoolExecutor(num_proc) if num_proc > 1 and len(todo) > 1 else None
    futures: dict[int, Any] = {}

    def finish(k: int, result: Any) -> None:
        on_done(k, result)
        bar.update()

    try:
        for index, scan in selected_scans(source, place):
            k, row = place[index]
            expected = shards[k][row].name
            if scan.name != expected:
                raise FmriInputError(
                    f"{scan.name}: expected {expected} at position {index} of the scans, as when the build was "
                    f"prepared ({plan_path}); the source changed: prepare again"
                )
            pending[k][row] = scan
            if len(pending[k]) < len(shards[k]):
                continue
            arrived = pending.pop(k)
            scans = [arrived[row] for row in range(len(shards[k]))]
            if executor is None:
                finish(k, task(k, shards[k], scans))
                continue
            futures[k] = executor.submit(task, k, shards[k], scans)
            while len(futures) > 2 * num_proc:
                first = next(iter(futures))
                finish(first, futures.pop(first).result())
        for k, future in futures.items():
            finish(k, future.result())
    finally:
        bar.close()
        if executor is not None:
            executor.shutdown(cancel_futures=True)


def set_aside(path: Path, problem: str, error: Exception) -> None:
    """Move a shard file that does not read whole to `<name>.corrupt`, so that it is computed
    again, with a warning naming it, the problem and the error."""
    aside = path.with_name(f"{path.name}.corrupt")
    os.replace(path, aside)
    warnings.warn(
        f"{path}: {problem} ({type(error).__name__}: {error}); moved to {aside.name}, computed again", stacklevel=4
    )


def publish_build(work: Path, output_dir: Path, config_name: str, files: Sequence[str]) -> None:
    """Put a merged build in place and drop its work folder: `work/publish/data/<config_name>`
    replaces `output_dir/data/<config_name>` (`atomic.replace_folder`), then each top-level file of
    `work/publish` replaces its namesake in `output_dir`, one rename each."""
    publish = work / "publish"
    final = output_dir / "data" / config_name
    final.parent.mkdir(parents=True, exist_ok=True)
    replace_folder(publish / "data" / config_name, final)
    for name in files:
        os.replace(publish / name, output_dir / name)
    shutil.rmtree(work)


__all__ = [
    "publish_build",
    "set_aside",
    "PLAN_NAME",
    "BuildPlan",
    "ScanInfo",
    "ScanSource",
    "iter_source",
    "run_shards",
    "selected_scans",
    "survey_scans",
]
