"""`fmrilm export`: a trained fMRI-language model as a folder ready for the Hugging Face Hub.

The folder holds what `AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)` and
`AutoProcessor.from_pretrained(folder, trust_remote_code=True)` need where fmrilm is not installed:
safetensors weights, the configuration / modeling / feature-extraction / processing files (remote
code), the processor and text tokenizer files, and a README.md model card
(`modeling_fmrilm.model_card`). It is written into a staging folder beside the destination and
renamed into place, so an interrupted export leaves the previous folder or the new one, never a
mix. Nothing pickled is copied (Trainer's `training_args.bin` stays behind), nor the training
record (it lists subject ids); the card summarises it.

`fmrilm_export.json` lists the files the export wrote. `--overwrite` replaces only such a folder
and only while it holds nothing else, so it never deletes a file it did not write; and the export
folder is never the model folder, a folder holding it or one inside it, nor the current folder or
one holding it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from .atomic import replace_folder
from .errors import FmriInputError
from .model_card import NOT_RECORDED, RECORD_NAME, read_json, render_model_card

REMOTE_CODE_FILES = (
    "configuration_fmrilm.py",
    "modeling_fmrilm.py",
    "modeling_fmri_tokenizer.py",
    "feature_extraction_fmrilm.py",
    "processing_fmrilm.py",
    "errors.py",
)
MARKER_NAME = "fmrilm_export.json"
"""Written last into every export: the names of the files it wrote (what `--overwrite` may replace)."""


@dataclass
class ExportSummary:
    """What `export_model` wrote."""

    folder: Path
    files: list[str]
    evaluated: bool
    unrecorded: int
    """How many card fields say `not recorded` (no training record, or an atlas it does not name)."""


def export_model(
    model_dir: str | Path,
    output_dir: str | Path,
    evaluation: str | Path | None = None,
    repo_id: str | None = None,
    atlas: str | None = None,
    training_data: str | None = None,
    license: str = "apache-2.0",
    overwrite: bool = False,
) -> ExportSummary:
    """Write the Hub-ready folder of the model in `model_dir` (a Stage 2/3 run's `final/`) to `output_dir`.

    Args:
        model_dir: folder with the model and its processor (`processor_config.json`).
        output_dir: the folder to write; an existing non-empty one needs `overwrite=True` and must
            be an earlier export holding only the files its `fmrilm_export.json` lists.
        evaluation: the JSON `fmrilm evaluate` wrote, for the card's evaluation table.
        repo_id: `ORG/NAME` the folder is meant for (the card's examples use it).
        atlas, training_data: fill or override what the training record says.
        license: the weights' licence (Hub licence id).

    Raises:
        FmriInputError: `model_dir` holds no fMRI-language model or no processor, `output_dir`
            is, holds or lies inside `model_dir` (or holds the current folder), exists (without
            `overwrite`, or is no earlier export), or `evaluation` is not an evaluation JSON.
    """
    from .ask import load_model

    model_dir, output_dir = (
        Path(model_dir),
        Path(output_dir).resolve(),
    )  # resolved: `--output .` has no name to stage beside
    if not (model_dir / "processor_config.json").is_file():
        raise FmriInputError(
            f"{model_dir}: expected a model folder with its processor (processor_config.json), as a training run's final/ holds it; "
            "Trainer's checkpoint-N folders hold no processor"
        )
    check_output_folder(output_dir, model_dir, overwrite)
    evaluation_content = read_json(evaluation, "an evaluation JSON of `fmrilm evaluate`") if evaluation else None
    record = read_json(model_dir / RECORD_NAME, "the training record") if (model_dir / RECORD_NAME).is_file() else None
    model, processor = load_model(model_dir)
    card = render_model_card(
        model,
        processor,
        record,
        evaluation_content,
        str(evaluation),
        repo_id=repo_id,
        atlas=atlas,
        training_data=training_data,
        license=license,
    )
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = output_dir.with_name(f".{output_dir.name}-staging")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        (staging / "README.md").write_text(card, encoding="utf-8")
        missing = [name for name in REMOTE_CODE_FILES if not (staging / name).is_file()]
        if missing or not any(staging.glob("*.safetensors")):
            raise FmriInputError(
                f"{staging}: the saved model lacks {missing or 'safetensors weights'}; the folder would not load as remote code"
            )
        written = sorted([path.name for path in staging.iterdir()] + [MARKER_NAME])
        (staging / MARKER_NAME).write_text(json.dumps({"written_by": "fmrilm export", "files": written}, indent=2))
        replace_folder(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    files = sorted(p.name for p in output_dir.iterdir())
    return ExportSummary(output_dir, files, evaluation_content is not None, card.count(NOT_RECORDED))


def check_output_folder(output_dir: Path, model_dir: Path, overwrite: bool) -> None:
    """Refuse an export folder whose replacement would destroy the model, the current folder, or
    anything the export did not write (module docstring).

    Raises:
        FmriInputError: naming `output_dir` and the rule it breaks.
    """
    output_dir, model = output_dir.resolve(), model_dir.resolve()
    for other, name in ((model, f"the model folder {model_dir}"), (Path.cwd(), "the current folder")):
        relation = "is" if output_dir == other else "holds" if output_dir in other.parents else None
        if relation is None and other == model and model in output_dir.parents:
            relation = "lies inside"
        if relation is not None:
            raise FmriInputError(
                f"{output_dir}: expected an export folder apart from {name}, found one that {relation} it"
            )
    if not output_dir.exists() or (output_dir.is_dir() and not any(output_dir.iterdir())):
        return
    if not output_dir.is_dir():
        raise FmriInputError(f"{output_dir}: expected a folder to export to, found a file")
    if not overwrite:
        raise FmriInputError(
            f"{output_dir}: already exists and is not empty; choose another folder or pass --overwrite"
        )
    rule = f"--overwrite replaces only an earlier export holding nothing but the files its {MARKER_NAME} lists"
    try:
        listed = set(json.loads((output_dir / MARKER_NAME).read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError):
        raise FmriInputError(
            f"{output_dir}: {rule}; found no readable {MARKER_NAME} (not a folder fmrilm export wrote)"
        ) from None
    others = sorted(path.name for path in output_dir.iterdir() if path.name not in listed)
    if others:
        raise FmriInputError(f"{output_dir}: {rule}; found files it did not write: {others[:10]}")


__all__ = ["MARKER_NAME", "REMOTE_CODE_FILES", "ExportSummary", "check_output_folder", "export_model"]
