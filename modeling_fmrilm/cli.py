"""The `fmrilm` console script: every step of the package from one command.

    fmrilm demo                              all three stages on the embedded data (README)
    fmrilm preprocess my_scans/ --tr 2.0     what the feature extractor makes of a folder of scans
    fmrilm preprocess my_scans/ --output-dir store    the window store every stage can train from
    fmrilm build-corpus --output-dir corpus  the descriptor corpus (datasets_scripts/build_descriptor_corpus.py)
    fmrilm train stage1|stage2|stage3 ...    a stage's recipe (recipes/), in this process or under a launcher
    fmrilm evaluate --model DIR ...          the model beside the majority and connectivity baselines
    fmrilm ask --model DIR --scan FILE "question"   one answer (or --chat: a conversation)
    fmrilm export --model DIR --output DIR   a Hub-ready folder with a model card
    fmrilm push --folder DIR --repo-id ORG/NAME     upload it (or a corpus, --repo-type dataset)
    fmrilm app --model DIR                   a page on 127.0.0.1 to ask about an uploaded scan

A mistake in the input (a bad or missing file, a wrong flag) ends with one line on stderr naming
it, and exit status 2; a warning (a scan with more ROIs than frames) is one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shlex
import subprocess
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import NoReturn

from tqdm.auto import tqdm

from .errors import FmriInputError, MissingTRError
from .feature_extraction_fmrilm import FmriFeatureExtractor
from .io import FmriScan, iter_scans
from .splits import DEFAULT_FRACTIONS

SOURCE_ROOT = Path(__file__).resolve().parents[1]
"""The checkout holding `recipes/` and `datasets_scripts/` (an editable install's source folder)."""
RECIPES = {
    "stage1": "recipes/stage1_tokenizer.py",
    "stage2": "recipes/stage2_align.py",
    "stage3": "recipes/stage3_instruct.py",
}
CORPUS_SCRIPT = "datasets_scripts/build_descriptor_corpus.py"
LAUNCHERS = ("python", "accelerate", "torchrun")
EXIT_USER_ERROR = 2


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (exit status 2), and whose long
    options take both spellings (`--output-dir` and `--output_dir`), as the recipes' do."""

    def add_argument(self, *names: str, **kwargs):  # type: ignore[override]
        spellings = [*names]
        for name in names:
            if name.startswith("--"):
                for other in ("--" + name[2:].replace("-", "_"), "--" + name[2:].replace("_", "-")):
                    if other not in spellings:
                        spellings.append(other)
        return super().add_argument(*spellings, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {value}")
    return value


def load_script(relative: str) -> ModuleType:
    """A script of the source checkout (`recipes/…`, `datasets_scripts/…`) imported from its path."""
    path = SOURCE_ROOT / relative
    if not path.is_file():
        raise FmriInputError(
            f"{relative}: not found in {SOURCE_ROOT}; the recipes and dataset scripts live in a source checkout "
            "(install it with pip install -e .)"
        )
    name = f"fmrilm_script_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses defined in the script look their module up there
    spec.loader.exec_module(module)
    return module


def run_demo(args: argparse.Namespace) -> None:
    """The main job on the embedded data (`modeling_fmrilm.pipeline`)."""
    from .pipeline import run_demo as demo

    demo(Path(args.output_dir))


def run_preprocess(args: argparse.Namespace) -> None:
    """Summarise the windows of the inputs, or with `--output-dir` build their window store
    (`modeling_fmrilm.window_store`: one machine, or `--prepare-only`, shares and `--merge`)."""
    inputs = args.inputs[0] if len(args.inputs) == 1 else args.inputs
    extractor = FmriFeatureExtractor(
        num_rois=args.num_rois,
        target_tr=args.target_tr,
        window_length=args.window_length,
        window_stride=args.window_stride,
    )
    if args.output_dir is None:
        store_only = [flag for flag, value in STORE_FLAGS.items() if getattr(args, value) not in (None, False)]
        if store_only:
            raise FmriInputError(f"{', '.join(store_only)}: build a window store, so they need --output-dir")
        scans = list(
            tqdm(
                iter_scans(inputs, tr=args.tr, key=args.key, num_rois=args.num_rois),
                desc="reading scans",
                unit="scan",
                leave=False,
                delay=1.0,
            )
        )
        from .pipeline import summarize_cohort

        print(summarize_cohort(scans, extractor))
        return
    build_store(args, inputs, extractor)


STORE_FLAGS = {
    "--prepare-only": "prepare_only",
    "--shard-index": "shard_index",
    "--merge": "merge",
    "--split-manifest": "split_manifest",
    "--skip-bad": "skip_bad",
}


def first_readable(source: Sequence[FmriScan], skip_bad: bool) -> FmriScan:
    """The first scan of `source` that reads (with `skip_bad`; else the first scan, or its error)."""
    for index in range(len(source)):
        try:
            return source[index]
        except FmriInputError:
            if not skip_bad or index == len(source) - 1:
                raise
    raise FmriInputError("inputs: expected at least one scan, found none")


def build_store(args: argparse.Namespace, inputs: str | list[str], extractor: FmriFeatureExtractor) -> None:
    """`fmrilm preprocess ... --output-dir STORE`: the steps of `modeling_fmrilm.window_store`."""
    from .io import ScanFiles
    from .window_store import build_store_shards, build_window_store, merge_store, prepare_store, store_config

    if (args.shard_index is None) != (args.num_shards is None):
        raise FmriInputError("--shard-index and --num-shards: expected both or neither")
    if sum([args.prepare_only, args.shard_index is not None, args.merge]) > 1:
        raise FmriInputError("expected at most one of --prepare-only, --shard-index/--num-shards and --merge")
    source = ScanFiles(inputs, tr=args.tr, key=args.key, num_rois=args.num_rois)
    if extractor.num_rois is None:  # every window of a store has one shape: the first readable scan's ROI count
        extractor.num_rois = first_readable(source, args.skip_bad).n_rois
    command = args.command_line
    config = store_config(extractor, args.shard_size)
    split = dict(
        fractions=args.fractions,
        split_manifest=args.split_manifest,
        split_seed=args.split_seed,
        shard_size=args.shard_size,
    )
    if args.prepare_only:
        plan = prepare_store(source, args.output_dir, extractor, skip_bad=args.skip_bad, **split)
        print(f"window store prepared in {args.output_dir}/.build: {len(plan.infos)} scans in {len(plan.shards)} shards; "
              f"skipped {len(plan.skipped)} scan(s)")  # fmt: skip
        return
    if args.shard_index is not None:
        reused = build_store_shards(
            source, args.output_dir, args.shard_index, args.num_shards, args.num_proc, expected_config=config
        )
        print(f"share {args.shard_index} of {args.num_shards} finished ({reused} shard(s) already done)")
        return
    if args.merge:
        summary = merge_store(args.output_dir, command, expected_config=config)
    else:
        summary = build_window_store(
            source,
            args.output_dir,
            extractor,
            num_proc=args.num_proc,
            skip_bad=args.skip_bad,
            command=command,
            **split,
        )
    print(f"window store written to {summary.folder}: {summary.scans} scans, windows " + ", ".join(f"{k} {v}" for k, v in summary.windows.items())
          + f"; skipped {len(summary.skipped)} scan(s)")  # fmt: skip
    for message in summary.skipped:
        print(f"skipped: {message}")


def run_build_corpus(args: argparse.Namespace) -> None:
    load_script(CORPUS_SCRIPT).main(args.argv)


def launch_command(
    stage: str, launcher: str, argv: Sequence[str], config_file: str | None, num_processes: int | None
) -> list[str]:
    """The command line that runs a stage's recipe under `accelerate launch` or `torchrun`."""
    recipe = str(SOURCE_ROOT / RECIPES[stage])
    if launcher == "accelerate":
        options = ["--config_file", config_file] if config_file else []
        options += ["--num_processes", str(num_processes)] if num_processes else []
        return [sys.executable, "-m", "accelerate.commands.launch", *options, recipe, *argv]
    if config_file:
        raise FmriInputError("--config-file: an Accelerate config needs --launcher accelerate")
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(num_processes or 1), recipe, *argv]


def run_train(args: argparse.Namespace) -> int:
    """A stage's recipe: its `main(argv)` in this process, or the recipe under a multi-process launcher."""
    if args.launcher == "python":
        if args.config_file or args.num_processes:
            raise FmriInputError("--config-file/--num-processes: need --launcher accelerate or torchrun")
        load_script(RECIPES[args.stage]).main(args.recipe_args)
        return 0
    load_script(RECIPES[args.stage])  # fails early, with the message above, where the recipe is missing
    command = launch_command(args.stage, args.launcher, args.recipe_args, args.config_file, args.num_processes)
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SOURCE_ROOT), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(command, env=environment).returncode


def evaluation_parser() -> argparse.ArgumentParser:
    """The flags of `fmrilm evaluate`: its task sources and its own (`EvaluationArguments`)."""
    from transformers import HfArgumentParser

    from .tasks.settings import EvaluationArguments
    from .tasks.sources import TaskSources

    return HfArgumentParser(
        (TaskSources, EvaluationArguments),
        prog="fmrilm evaluate",
        description="The model beside the majority and connectivity baselines, on test subjects.",
    )


def run_evaluate(args: argparse.Namespace) -> None:
    """`fmrilm evaluate`: the harness (`tasks.evaluate.run_evaluation`), its table printed."""
    from .tasks.evaluate import run_evaluation

    parser = evaluation_parser()
    sources, arguments, unknown = parser.parse_args_into_dataclasses(args.argv, return_remaining_strings=True)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    report, markdown, record = run_evaluation(sources, arguments)
    print(report.to_markdown())
    print(f"written: {markdown}, {record}")


def run_ask(args: argparse.Namespace) -> None:
    from .ask import Conversation, checked_question, load_model, load_processor, read_scan

    if not args.question and not args.chat:
        raise FmriInputError('question: expected a question ("Is this participant a control?") or --chat')
    if args.question:
        checked_question(args.question)  # before anything loads
    processor = load_processor(args.model, args.trust_remote_code)  # the scan is checked before the weights load
    scan = read_scan(args.scan, args.tr, args.atlas, args.atlas_labels, args.key, processor.feature_extractor.num_rois)
    model, processor = load_model(args.model, args.trust_remote_code, processor)
    conversation = Conversation(model, processor, scan, args.chat_template, args.max_new_tokens)
    if args.question:
        print(conversation.ask(args.question), flush=True)
    if not args.chat:
        return
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"Questions about {Path(args.scan).name}, one per line (empty line or Ctrl-D to end).", file=sys.stderr)
    while True:
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line or (interactive and not line.strip()):
            break
        if line.strip():
            print(conversation.ask(line), flush=True)


def run_export(args: argparse.Namespace) -> None:
    from .export import export_model

    summary = export_model(
        args.model,
        args.output,
        args.evaluation,
        args.repo_id,
        args.atlas,
        args.training_data,
        args.license,
        args.overwrite,
    )
    print(f"exported to {summary.folder}: {', '.join(summary.files)}")
    if not summary.evaluated:
        print("the model card says 'not evaluated': pass --evaluation evaluation.json (written by fmrilm evaluate)")
    if summary.unrecorded:
        print(f"the model card says 'not recorded' {summary.unrecorded} time(s): pass --atlas / --training-data")
    print(f"publish it with: fmrilm push --folder {summary.folder} --repo-id {args.repo_id or 'ORG/NAME'}")


def run_push(args: argparse.Namespace) -> None:
    from .hub import push_folder

    print(f"published to {push_folder(args.folder, args.repo_id, args.repo_type, private=args.private)}")


def run_app(args: argparse.Namespace) -> None:
    from .app import serve

    serve(
        args.model, args.corpus, args.atlas, args.port, args.max_new_tokens, args.chat_template, args.trust_remote_code,
        max_upload_mb=args.max_upload_mb,
    )  # fmt: skip


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    """`--model`, `--max-new-tokens`, `--chat-template`, `--trust-remote-code` (ask and app)."""
    from .ask import DEFAULT_MAX_NEW_TOKENS

    parser.add_argument(
        "--model", required=True, help="fMRI-language model folder (a run's final/, an export) or Hub id"
    )
    parser.add_argument(
        "--max-new-tokens", type=positive_int, default=DEFAULT_MAX_NEW_TOKENS, help="longest answer in tokens"
    )
    parser.add_argument("--chat-template", action="store_true", help="prompt through the processor's chat template")
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="run the checkpoint's own code instead of this package's"
    )


def build_parser() -> argparse.ArgumentParser:
    from .app import DEFAULT_MAX_UPLOAD_MB

    parser = OneLineParser(
        prog="fmrilm", description=__doc__.splitlines()[0], epilog="fmrilm COMMAND --help tells more."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="run the main job on the embedded data")
    demo.add_argument("--output-dir", default="outputs/demo")
    demo.set_defaults(func=run_demo)

    pre = commands.add_parser(
        "preprocess", help="summarise the windows of a folder or files, or write them as a window store"
    )
    pre.add_argument("inputs", nargs="+", help="a folder of scans or scan files")
    pre.add_argument("--tr", type=float, default=None, help="repetition time when files carry none")
    pre.add_argument("--key", default=None, help="variable/array/dataset holding the time series")
    pre.add_argument("--num-rois", type=positive_int, default=None, help="ROI count every scan must have (axis 0)")
    pre.add_argument("--target-tr", type=float, default=2.0)
    pre.add_argument("--window-length", type=int, default=160)
    pre.add_argument("--window-stride", type=int, default=None)
    store = pre.add_argument_group("window store (with --output-dir; modeling_fmrilm.window_store)")
    store.add_argument(
        "--output-dir", default=None, help="write the windows as a window store there instead of summarising them"
    )
    store.add_argument(
        "--shard-size",
        type=positive_int,
        default=16,
        help="scans per shard (per Arrow file, per unit of resumable work)",
    )
    store.add_argument("--num-proc", type=positive_int, default=1, help="processes computing shards on this machine")
    store.add_argument(
        "--skip-bad", action="store_true", help="skip unreadable or unusable scans (listed) instead of stopping"
    )
    store.add_argument(
        "--split-manifest", default=None, help="splits.json, corpus or store whose subject split is kept"
    )
    store.add_argument(
        "--fractions",
        type=float,
        nargs=3,
        default=list(DEFAULT_FRACTIONS),
        help="train/validation/test fractions of subjects",
    )
    store.add_argument("--split-seed", type=int, default=0, help="seed of the subject split")
    store.add_argument(
        "--prepare-only", action="store_true", help="survey and split the scans, then stop (before the shares)"
    )
    store.add_argument(
        "--shard-index", type=int, default=None, help="build only this share of the shards (with --num-shards)"
    )
    store.add_argument(
        "--num-shards", type=positive_int, default=None, help="number of shares the shards are dealt into"
    )
    store.add_argument("--merge", action="store_true", help="publish the store from finished shares")
    pre.set_defaults(func=run_preprocess)

    corpus = commands.add_parser(
        "build-corpus",
        add_help=False,
        help=f"build the descriptor corpus (flags: those of {CORPUS_SCRIPT}; --help lists them)",
    )
    corpus.set_defaults(func=run_build_corpus, passthrough=True)

    train = commands.add_parser(
        "train",
        help="train a stage with its recipe",
        description="Run a stage's recipe. Flags after the stage go to the recipe (fmrilm train stage1 --help lists them); "
        "launcher flags come before it: fmrilm train --launcher accelerate --config-file recipes/configs/ddp.yaml stage2 --output_dir out",
    )
    train.add_argument(
        "--launcher",
        choices=LAUNCHERS,
        default="python",
        help="python: this process; accelerate/torchrun: several processes",
    )
    train.add_argument(
        "--config-file", default=None, help="Accelerate config (recipes/configs/*.yaml), with --launcher accelerate"
    )
    train.add_argument("--num-processes", type=int, default=None, help="processes to launch")
    train.add_argument(
        "stage", choices=list(RECIPES), help="stage1 tokenizer, stage2 alignment, stage3 instruction tuning"
    )
    train.add_argument(
        "recipe_args", nargs=argparse.REMAINDER, help="the recipe's flags (TrainingArguments and the stage's own)"
    )
    train.set_defaults(func=run_train)

    evaluate = commands.add_parser(
        "evaluate", add_help=False, help="evaluate a model beside the baselines (--help lists the flags)"
    )
    evaluate.set_defaults(func=run_evaluate, passthrough=True)

    ask = commands.add_parser(
        "ask", help="ask a model about a scan", description="Ask an fMRI-language model about one scan."
    )
    _model_arguments(ask)
    ask.add_argument("--scan", required=True, help="scan file: .mat/.npy/.npz/.h5/.tsv/.csv, or NIfTI with --atlas")
    ask.add_argument("--tr", type=float, default=None, help="repetition time in seconds when the file carries none")
    ask.add_argument("--atlas", default=None, help="label atlas image on the NIfTI scan's grid")
    ask.add_argument("--atlas-labels", default=None, help="label table of the atlas (TSV/CSV with index and name)")
    ask.add_argument("--key", default=None, help="variable/array/dataset holding the time series")
    ask.add_argument("--chat", action="store_true", help="then read further questions from stdin, one per line")
    ask.add_argument("question", nargs="?", default=None, help="the question")
    ask.set_defaults(func=run_ask)

    export = commands.add_parser("export", help="write a Hub-ready model folder with its model card")
    export.add_argument("--model", required=True, help="a Stage 2/3 run's final/ folder")
    export.add_argument("--output", required=True, help="the folder to write")
    export.add_argument(
        "--evaluation", default=None, help="evaluation.json written by fmrilm evaluate (the card's table)"
    )
    export.add_argument("--repo-id", default=None, help="ORG/NAME it will be pushed to (the card's examples)")
    export.add_argument("--atlas", default=None, help="atlas name, when the training record does not give it")
    export.add_argument("--training-data", default=None, help="training data in words, instead of the record's")
    export.add_argument("--license", default="apache-2.0", help="licence of the weights (Hub licence id)")
    export.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier export (one holding only the files its fmrilm_export.json lists)",
    )
    export.set_defaults(func=run_export)

    push = commands.add_parser("push", help="upload an exported folder (or a corpus) to the Hugging Face Hub")
    push.add_argument("--folder", required=True)
    push.add_argument("--repo-id", required=True, help="ORG/NAME")
    push.add_argument(
        "--repo-type", choices=["model", "dataset"], default="model", help="dataset for a descriptor corpus"
    )
    push.add_argument("--private", action="store_true")
    push.set_defaults(func=run_push)

    app = commands.add_parser("app", help="serve a page on 127.0.0.1 to ask about uploaded scans (needs fmrilm[app])")
    _model_arguments(app)
    app.add_argument(
        "--corpus", default=None, help="descriptor corpus folder: describe scans against its cohort reference"
    )
    app.add_argument("--atlas", default=None, help="default label atlas for NIfTI uploads")
    app.add_argument("--port", type=int, default=7860)
    app.add_argument("--max-upload-mb", type=positive_int, default=DEFAULT_MAX_UPLOAD_MB, help="largest upload, in MB")
    app.set_defaults(func=run_app)
    return parser


class ConsoleHandler(logging.Handler):
    """The package's log records as the command's output: information on stdout, warnings and
    errors on stderr (the streams looked up at each record, so a redirected one is followed)."""

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stdout if record.levelno < logging.WARNING else sys.stderr
        print(self.format(record), file=stream, flush=True)


def show_package_logs() -> None:
    """Route the `modeling_fmrilm` logger (the library modules' reports) to the console, once."""
    logger = logging.getLogger("modeling_fmrilm")
    logger.setLevel(logging.INFO)
    if not any(isinstance(handler, ConsoleHandler) for handler in logger.handlers):
        logger.addHandler(ConsoleHandler())


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the console script; exits 2 with one line on stderr for a user mistake."""
    from huggingface_hub.errors import HFValidationError

    show_package_logs()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.argv = extra
    args.command_line = shlex.join(["fmrilm", *(sys.argv[1:] if argv is None else argv)])

    def one_line(message: Warning | str, *_: object, **__: object) -> None:
        print(f"fmrilm {args.command}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = one_line
            status = args.func(args)
    except (FmriInputError, OSError, HFValidationError) as error:
        if isinstance(error, MissingTRError) and hasattr(args, "tr"):
            error = MissingTRError(error.where, "pass --tr SECONDS")
        message = " ".join(str(error).split())
        print(f"fmrilm {args.command}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None
    except KeyboardInterrupt:
        print(f"fmrilm {args.command}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    if status:
        raise SystemExit(status)


__all__ = [
    "CORPUS_SCRIPT",
    "EXIT_USER_ERROR",
    "LAUNCHERS",
    "RECIPES",
    "SOURCE_ROOT",
    "STORE_FLAGS",
    "ConsoleHandler",
    "OneLineParser",
    "build_parser",
    "build_store",
    "evaluation_parser",
    "first_readable",
    "launch_command",
    "load_script",
    "main",
    "positive_int",
    "run_app",
    "run_ask",
    "run_build_corpus",
    "run_demo",
    "run_evaluate",
    "run_export",
    "run_preprocess",
    "run_push",
    "run_train",
    "show_package_logs",
]


if __name__ == "__main__":
    main()
