"""Stage 1 on `transformers.Trainer`: the neural tokenizer `FmriTokenizerForPreTraining`.

What the stage adds to Trainer: the window datasets of the subject split, a collator that attaches
each window's descriptor-text embedding, and `Stage1Trainer`, whose `compute_loss` passes the
run-constant word-embedding matrix of the domain-confusion loss (one device-resident tensor, not
per-sample data a collator should copy every step) and adds the loss components, codebook
histogram and reconstruction sums of every batch to the logs (`SumLoggingTrainer`:
`reconstruction_loss`, `commitment_loss`, …, `utilisation`, `perplexity`, and for evaluation
`eval_r2`, `eval_mse`).

Mixed precision, gradient accumulation, DDP/FSDP2/DeepSpeed, checkpoint rotation, exact resume,
evaluation and `push_to_hub` are Trainer's.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import set_seed

from ..configuration_fmrilm import FmriTokenizerConfig
from ..errors import FmriInputError
from ..feature_extraction_fmrilm import FmriFeatureExtractor
from ..io import FmriScan
from ..modeling_fmri_tokenizer import (
    FmriTokenizerForPreTraining,
    FmriTokenizerModel,
    codebook_usage,
    codebook_usage_of_counts,
)
from ..splits import SubjectSplit
from .common import (
    CohortArguments,
    StageTrainingArguments,
    StoreWindows,
    SumLoggingTrainer,
    WindowCollator,
    claims_output_dir,
    digests_across_processes,
    manifest_of,
    resolve_resume,
    save_final,
    store_windows,
    training_store,
)
from .text_inputs import encode_texts, load_texts, word_embedding_matrix

LOSS_COMPONENTS = ("reconstruction_loss", "commitment_loss", "contrastive_loss", "domain_loss")


@dataclass
class Stage1Arguments(CohortArguments):
    """Data, windows, model and optional losses of a Stage 1 run (optimisation: `Stage1TrainingArguments`)."""

    target_tr: float = 2.0
    window_length: int = 64
    window_stride: int = 16
    patch_length: int = 16
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_decoder_layers: int = 2
    num_attention_heads: int = 4
    num_codes: int = 128
    code_dim: int | None = field(default=None, metadata={"help": "default 32, or the word-embedding width"})
    ema_decay: float = field(default=0.9, metadata={"help": "codebook EMA decay (fast for short runs)"})
    code_projection: str = field(
        default="mlp",
        metadata={"help": "encoder output to code space: 'mlp' (the paper's Linear-Tanh-Linear) or 'linear'"},
    )
    kmeans_warmup_steps: int = field(
        default=100,
        metadata={
            "help": "steps of plain autoencoder training before the codebook's k-means initialisation (on the trained encoder's outputs)"
        },
    )
    commitment_weight: float = 0.1
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "more FmriTokenizerConfig fields as JSON, e.g. '{\"hidden_dropout_prob\": 0.1}'"},
    )
    text_dataset: str | None = field(
        default=None,
        metadata={
            "help": "dataset folder with subject + text columns (the descriptor corpus): turns on the SigLIP loss"
        },
    )
    text_column: str = "text"
    text_encoder: str | None = field(default=None, metadata={"help": "frozen AutoModel text encoder; default MiniLM"})
    word_embeddings_model: str | None = field(
        default=None, metadata={"help": "LM whose input embeddings feed the domain-confusion loss"}
    )

    def overrides(self) -> dict[str, Any]:
        """`config_overrides` parsed."""
        if not self.config_overrides:
            return {}
        try:
            value = json.loads(self.config_overrides)
        except json.JSONDecodeError as error:
            raise FmriInputError(
                f"config_overrides: expected a JSON object, found {self.config_overrides!r} ({error})"
            ) from None
        if not isinstance(value, dict):
            raise FmriInputError(f"config_overrides: expected a JSON object, found {self.config_overrides!r}")
        return value


@dataclass
class Stage1TrainingArguments(StageTrainingArguments):
    """`TrainingArguments` with defaults for the small tokenizer (every Trainer flag still works)."""

    output_dir: str | None = field(default="outputs/stage1", metadata={"help": "checkpoints, logs and final/"})
    num_train_epochs: float = field(default=30.0, metadata={"help": "training epochs"})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "windows per process and step"})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "windows per process in evaluation"})
    learning_rate: float = field(default=2e-3, metadata={"help": "peak AdamW learning rate"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    warmup_steps: float = field(default=20, metadata={"help": "warm-up steps (or a fraction of all steps when < 1)"})


@dataclass
class Stage1Result:
    """What `train_stage1` returns."""

    model: FmriTokenizerForPreTraining
    feature_extractor: FmriFeatureExtractor
    split: SubjectSplit
    trainer: Stage1Trainer
    final_dir: Path

    @property
    def history(self) -> list[dict[str, float]]:
        """Trainer's log history (training and evaluation entries)."""
        return self.trainer.state.log_history

    def last_eval(self) -> dict[str, float]:
        """The last evaluation entry of the log history (empty without validation subjects)."""
        return next((entry for entry in reversed(self.history) if "eval_r2" in entry), {})


class Stage1Trainer(SumLoggingTrainer):
    """Trainer for `FmriTokenizerForPreTraining`; see the module docstring for what it overrides."""

    def __init__(self, *args: Any, word_embeddings: torch.Tensor | None = None, **kwargs: Any) -> None:
        self.sum_sizes = {
            **{name: 1 for name in LOSS_COMPONENTS},
            "batches": 1,
            "squared_error": 1,
            "total_variance": 1,
            "values": 1,
            "code_counts": kwargs["model"].config.num_codes,
            "restarts": 1,
        }
        super().__init__(*args, **kwargs)
        self.word_embeddings = word_embeddings

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.word_embeddings is not None:
            if self.word_embeddings.device != self.args.device:
                self.word_embeddings = self.word_embeddings.to(self.args.device)
            inputs = {**inputs, "word_embeddings": self.word_embeddings}
        outputs = model(**inputs)
        with torch.no_grad():
            target = inputs["fmri_values"].double()
            self.sums["train" if model.training else "eval"].add(
                **{name: outputs[name] for name in LOSS_COMPONENTS if outputs.get(name) is not None},
                batches=1,
                squared_error=(outputs.reconstruction.double() - target).pow(2).sum(),
                total_variance=(target - target.mean(dim=-1, keepdim=True)).pow(2).sum(),
                values=target.numel(),
                code_counts=torch.bincount(outputs.codes.reshape(-1), minlength=self.sum_sizes["code_counts"]),
                restarts=self.model.base_model.quantizer.last_restart_count if model.training else 0,
            )
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def summarize(self, sums: dict[str, torch.Tensor], prefix: str) -> dict[str, float]:
        batches = float(sums["batches"])
        if batches == 0:
            return {}
        config = self.model.config
        present = {
            "contrastive_loss": config.text_embed_dim is not None,
            "domain_loss": bool(getattr(config, "use_domain_confusion", False)),
        }
        logs = {f"{prefix}{name}": float(sums[name]) / batches for name in LOSS_COMPONENTS if present.get(name, True)}
        utilisation, perplexity = codebook_usage_of_counts(sums["code_counts"])
        logs[f"{prefix}utilisation"], logs[f"{prefix}perplexity"] = float(utilisation), float(perplexity)
        if (
            not prefix
        ):  # codes restarted per step, as a fraction of the codebook (rank 0's count: the restarts are broadcast)
            logs["restart_rate"] = (
                float(sums["restarts"]) / self.accelerator.num_processes / batches / config.num_codes
            )
        else:  # an evaluation's reconstruction quality over all its windows
            logs[f"{prefix}r2"] = 1.0 - float(sums["squared_error"]) / max(float(sums["total_variance"]), 1e-12)
            logs[f"{prefix}mse"] = float(sums["squared_error"]) / max(float(sums["values"]), 1.0)
        return logs


def build_config(
    args: Stage1Arguments, num_rois: int, text_dim: int | None, word_dim: int | None
) -> FmriTokenizerConfig:
    """The tokenizer config of a run: the named arguments, then `config_overrides`."""
    code_dim = args.code_dim or word_dim or 32
    if word_dim is not None and code_dim != word_dim:
        raise FmriInputError(
            f"code_dim: expected the word-embedding width {word_dim} of {args.word_embeddings_model}, found {code_dim}"
        )
    values = dict(
        num_rois=num_rois,
        window_length=args.window_length,
        patch_length=args.patch_length,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_hidden_layers,
        num_decoder_layers=args.num_decoder_layers,
        num_attention_heads=args.num_attention_heads,
        num_codes=args.num_codes,
        code_dim=code_dim,
        ema_decay=args.ema_decay,
        code_projection=args.code_projection,
        kmeans_warmup_steps=args.kmeans_warmup_steps,
        commitment_weight=args.commitment_weight,
        text_embed_dim=text_dim,
        use_domain_confusion=word_dim is not None,
    )
    return FmriTokenizerConfig(**{**values, **args.overrides()})


def text_table(args: Stage1Arguments, text_keys: Sequence[str]) -> torch.Tensor | None:
    """Embeddings `(len(text_keys), dim)` of each scan's text, or `None` without `text_dataset`.

    Raises:
        FmriInputError: a scan of the training or validation subjects has no text.
    """
    if args.text_dataset is None:
        return None
    texts = load_texts(args.text_dataset, args.text_column)
    missing = [key for key in text_keys if key not in texts]
    if missing:
        raise FmriInputError(
            f"{args.text_dataset}: no {args.text_column!r} for scans {missing[:10]} ({len(missing)} of "
            f"{len(text_keys)}; keys are dataset/subject[/session]); every training and validation scan needs a text"
        )
    return encode_texts([texts[key] for key in text_keys], args.text_encoder)


@claims_output_dir
def train_stage1(
    args: Stage1Arguments,
    training_args: Stage1TrainingArguments,
    scans: Sequence[FmriScan] | None = None,
    callbacks: Sequence[Any] = (),
    console_logs: bool = True,
) -> Stage1Result:
    """Train the tokenizer on the training subjects of the split, evaluate on its validation
    subjects (its test subjects are never read), and save `output_dir/final` atomically:
    model, feature extractor and `training_record.json` (split, mixed precision, processes).

    The windows are read from a window store (`training_store`): `--window_store`, or one built
    into `output_dir/window_store` from `scans` (or the cohort of `--data_dir`)."""
    extractor = FmriFeatureExtractor(
        num_rois=scans[0].n_rois if scans else None, target_tr=args.target_tr, window_length=args.window_length,
        window_stride=args.window_stride,
    )  # fmt: skip
    store = training_store(
        args, training_args, extractor, args.split_manifest or manifest_of(args.text_dataset), scans
    )
    split, stride = store.split, extractor.stride
    extractor = copy.deepcopy(store.feature_extractor)  # the store's preprocessing, at this run's stride
    extractor.window_stride = stride
    train_windows, validation_windows = (store_windows(store, [name], stride) for name in ("train", "validation"))
    text_keys = sorted(set(train_windows["text_key"]) | set(validation_windows["text_key"]))
    train_data = StoreWindows(train_windows, text_keys)
    validation_data = StoreWindows(validation_windows, text_keys)
    if len(train_data) == 0:
        raise FmriInputError(
            "training subjects: their scans give no window; check window_length against the scans' length"
        )
    texts = text_table(args, text_keys)
    words = word_embedding_matrix(args.word_embeddings_model) if args.word_embeddings_model else None
    config = build_config(
        args, extractor.num_rois, None if texts is None else texts.shape[1], None if words is None else words.shape[1]
    )
    if len(validation_data) == 0:
        training_args.eval_strategy = "no"
    set_seed(training_args.seed)  # the weights must not depend on the process or the run
    model = FmriTokenizerForPreTraining(config)
    trainer = Stage1Trainer(
        model=model,
        args=training_args,
        train_dataset=train_data,
        eval_dataset=validation_data if len(validation_data) else None,
        data_collator=WindowCollator(texts),
        word_embeddings=words,
        callbacks=list(callbacks),
        console_logs=console_logs,
    )
    trainer.train(
        resume_from_checkpoint=resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    )
    quantizer = trainer.model.base_model.quantizer
    codebook_fitted = not config.kmeans_init or int(quantizer.kmeans_vectors_used) > 0
    if not codebook_fitted:
        warnings.warn(
            f"Stage 1 ended after {trainer.state.global_step} steps, before the codebook's k-means initialisation "
            f"({config.kmeans_warmup_steps} warm-up steps, then {quantizer.kmeans_init_vectors} encoder outputs): the codes "
            "of this tokenizer are not fitted; train for more steps or lower --kmeans_warmup_steps",
            stacklevel=2,
        )
    codebooks = digests_across_processes(trainer, quantizer.codebook.weight)
    if len(set(codebooks)) > 1:
        raise RuntimeError(f"the codebook differs across processes after training (SHA-256 per rank: {codebooks})")
    record = {
        "stage": 1,
        "arguments": asdict(args),
        "mixed_precision": trainer.accelerator.mixed_precision,
        "num_processes": trainer.accelerator.num_processes,
        "codebook_sha256_per_process": codebooks,
        "codebook_initialised": codebook_fitted,
        "log_history": trainer.state.log_history,
        "split": split.to_json(),
        "window_store": store.location,
        "train_windows": len(train_data),
        "validation_windows": len(validation_data),
    }
    final_dir = save_final(trainer, Path(training_args.output_dir) / "final", [extractor.save_pretrained], record)
    return Stage1Result(trainer.model.eval(), extractor, split, trainer, final_dir)


def reconstruction_r2(target: torch.Tensor, prediction: torch.Tensor) -> float:
    """`1 - SSE / SST` over all values, SST taken around each (window, ROI) series' own mean.

    Args:
        target, prediction: `(n_windows, n_rois, n_frames)`.
    """
    target = target.double()
    residual = (target - prediction.double()).pow(2).sum()
    total = (target - target.mean(dim=-1, keepdim=True)).pow(2).sum()
    return float(1.0 - residual / total)


@torch.no_grad()
def evaluate_tokenizer(model: FmriTokenizerModel, fmri_values: torch.Tensor, batch_size: int = 64) -> dict[str, float]:
    """Reconstruction R², MSE, codebook utilisation and perplexity of `model` on windows `(n, n_rois, n_frames)`."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    codes, reconstructions = [], []
    for batch in fmri_values.split(batch_size):
        batch_codes = model.encode(batch.to(device))
        codes.append(batch_codes.cpu())
        reconstructions.append(model.decode(batch_codes).float().cpu())
    model.train(was_training)
    reconstruction = torch.cat(reconstructions)
    utilisation, perplexity = codebook_usage(torch.cat(codes), model.config.num_codes)
    return {
        "r2": reconstruction_r2(fmri_values, reconstruction),
        "mse": float((fmri_values - reconstruction).pow(2).mean()),
        "utilisation": float(utilisation),
        "perplexity": float(perplexity),
    }


__all__ = [
    "Stage1Arguments",
    "Stage1Result",
    "Stage1Trainer",
    "Stage1TrainingArguments",
    "build_config",
    "evaluate_tokenizer",
    "reconstruction_r2",
    "train_stage1",
]
