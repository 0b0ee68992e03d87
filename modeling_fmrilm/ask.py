"""Asking a trained fMRI-language model about one scan (`fmrilm ask`, `fmrilm app`).

A `Conversation` holds a model, its processor, one scan and the turns so far. Each question is
put after the scan in the Stage 3 instruction layout (`tasks.prompts.ScanBlock`, the layout the
model was instruction-tuned on):

    <fmri>
    ### Question: {question 1}
    ### Answer:{answer 1}
    ### Question: {question 2}
    ### Answer:

or, with `chat_template=True`, as user/assistant turns rendered by the processor's chat template
(the scan is a `{"type": "fmri"}` part of the first user turn). The answer is the model's greedy
continuation up to its end-of-text token or the first line break.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .configuration_fmrilm import FmriLMConfig
from .errors import FmriInputError
from .feature_extraction_fmrilm import validate_fmri
from .io import FmriScan, read_array_file, read_nifti
from .io.readers import NIFTI_SUFFIXES
from .processing_fmrilm import check_no_fmri_tokens
from .tasks.prompts import Prompt, ScanBlock

DEFAULT_MAX_NEW_TOKENS = 64


def load_processor(model: str | Path, trust_remote_code: bool = False) -> Any:
    """The `FmriProcessor` of an fMRI-language model folder or Hub id (quick: no weights are read).

    The classes are this package's (importing it registers them with the Auto classes);
    `trust_remote_code=True` runs the checkpoint's own copy of the code instead.

    Raises:
        FmriInputError: a local path that is not a model folder, or a checkpoint that is not an
            fMRI-language model (a Stage 1 tokenizer, a plain LM).
    """
    from transformers import AutoConfig, AutoProcessor

    import modeling_fmrilm  # noqa: F401  (registers the Auto classes)

    path = Path(model)
    if (path.exists() or path.is_absolute() or str(model).startswith(".")) and not (path / "config.json").is_file():
        found = "a file" if path.is_file() else "a folder without config.json" if path.is_dir() else "no such folder"
        raise FmriInputError(
            f"{model}: expected an fMRI-language model folder (a Stage 2/3 run's final/ or an `fmrilm export` folder) "
            f"or a Hub id, found {found}"
        )
    source = path / "config.json" if path.is_dir() else f"{model} (config.json)"
    try:
        config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    except FmriInputError as error:
        raise FmriInputError(f"{source}: {error}") from None
    if config.model_type != FmriLMConfig.model_type:
        raise FmriInputError(
            f"{source}: expected an fMRI-language model (model_type {FmriLMConfig.model_type!r}), found model_type "
            f"{config.model_type!r}"
        )
    if (path / "tokenizer.json").is_file():
        _check_tokenizer_file(path / "tokenizer.json")
    return AutoProcessor.from_pretrained(model, trust_remote_code=trust_remote_code)


def _check_tokenizer_file(path: Path) -> None:
    """Parse `tokenizer.json` with the `tokenizers` library, whose errors are otherwise raw tracebacks."""
    from tokenizers import Tokenizer

    try:
        Tokenizer.from_file(str(path))
    except Exception as error:  # the library raises a bare Exception for every parse error
        raise FmriInputError(
            f"{path}: expected a tokenizer file as save_pretrained writes it, found content the tokenizers library cannot read ({error})"
        ) from None


def check_weights(folder: Path, config: Any, trust_remote_code: bool = False) -> None:
    """Check a local model folder's `*.safetensors` files against `config` before a weight is allocated:
    each file's header must be readable, its tensors must lie inside the file, and each tensor's shape
    must be the one the config gives (an edited `vocab_size` would otherwise be allocated as asked).

    Raises:
        FmriInputError: naming the file and the tensor, what the file holds and what the config gives.
    """
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):  # shapes only: nothing is allocated
        reference = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    expected = {name: tuple(tensor.shape) for name, tensor in reference.state_dict().items()}
    for file in sorted(folder.glob("*.safetensors")):
        header = _safetensors_header(file)
        for name, entry in header.items():
            if name in expected and tuple(entry["shape"]) != expected[name]:
                raise FmriInputError(
                    f"{file}: tensor {name} has shape {tuple(entry['shape'])}, where {folder / 'config.json'} gives "
                    f"{expected[name]}; the config does not describe these weights"
                )


def _safetensors_header(file: Path) -> dict[str, Any]:
    """The tensor entries of a safetensors file's header, checked to lie inside the file."""
    size = file.stat().st_size
    with open(file, "rb") as handle:
        prefix = handle.read(8)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        if not 0 < length <= size - 8:
            raise FmriInputError(
                f"{file}: expected a safetensors file, found {size} bytes without a readable header (truncated or not safetensors)"
            )
        try:
            header = json.loads(handle.read(length))
            entries = {name: entry for name, entry in header.items() if name != "__metadata__"}
            end = max((int(entry["data_offsets"][1]) for entry in entries.values()), default=0)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
            raise FmriInputError(
                f"{file}: expected a safetensors file, found an unreadable header ({type(error).__name__}: {error})"
            ) from None
    if 8 + length + end > size:
        raise FmriInputError(
            f"{file}: the header places tensor data up to byte {8 + length + end:,}, the file holds {size:,}: it is truncated"
        )
    return entries


def load_model(model: str | Path, trust_remote_code: bool = False, processor: Any = None) -> tuple[Any, Any]:
    """An `FmriLMForCausalLM` (eval mode) and its `FmriProcessor` (`processor`, when already
    loaded with `load_processor`, is reused) from a folder or a Hub id; a local folder's weights are
    checked first (`check_weights`)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    processor = processor if processor is not None else load_processor(model, trust_remote_code)
    if Path(model).is_dir():
        check_weights(
            Path(model), AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code), trust_remote_code
        )
    return AutoModelForCausalLM.from_pretrained(model, trust_remote_code=trust_remote_code).eval(), processor


def read_scan(
    path: str | Path,
    tr: float | None = None,
    atlas: str | Path | None = None,
    atlas_labels: str | Path | None = None,
    key: str | None = None,
    num_rois: int | None = None,
) -> FmriScan:
    """One scan from any file the readers take: a parcellated array file (.mat/.npy/.npz/.h5/.tsv/.csv)
    or a 4-D NIfTI image parcellated with `atlas` (a label image on its grid).

    Args:
        tr: seconds between frames when the file (or its JSON sidecar) carries none.
        atlas, atlas_labels: label image and optional label table, for NIfTI images.
        key: variable/array/dataset holding the time series in a .mat/.npz/.h5 with several.
        num_rois: the ROI count the model expects; another count is an error naming both axes.

    Raises:
        FmriInputError: the file's problem, named (see `modeling_fmrilm.io`), or a NIfTI image
            without an atlas.
    """
    if str(path).endswith(NIFTI_SUFFIXES):
        if atlas is None:
            raise FmriInputError(
                f"{path}: a NIfTI image needs a label atlas on its grid to be parcellated into ROIs (--atlas ATLAS.nii.gz)"
            )
        scan = read_nifti(path, atlas, labels=atlas_labels, tr=tr)
        validate_fmri(scan.data, str(path), num_rois=num_rois, tr=scan.tr)
        return scan
    return read_array_file(path, tr=tr, key=key, num_rois=num_rois)


def checked_question(question: str) -> str:
    """`question` stripped, or `FmriInputError` for an empty one or one holding fMRI token strings (even
    `<fmri>`: the question is plain text, and the `Conversation` places the scan's marker)."""
    question = question.strip()
    if not question:
        raise FmriInputError("question: expected a question about the scan, found an empty text")
    check_no_fmri_tokens(question, "question", allow_markers=False)
    return question


@dataclass
class Conversation:
    """Questions about one scan, answered greedily by an fMRI-language model (see module docstring).

    Attributes:
        model, processor: from `load_model`.
        scan: the scan the conversation is about.
        chat_template: render the prompt with the processor's chat template.
        max_new_tokens: longest answer, in tokens.
        turns: `(question, answer)` pairs so far; answers as generated (with their leading space).
    """

    model: Any
    processor: Any
    scan: FmriScan
    chat_template: bool = False
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    turns: list[tuple[str, str]] = field(default_factory=list)

    def prompt(self, question: str) -> str:
        """The whole prompt for `question` after the turns so far, with one `<fmri>` marker."""
        block = ScanBlock(turns=[*self.turns, (question, None)])
        return Prompt(shots=[], query=block).text(self.processor, self.chat_template)

    @torch.no_grad()
    def ask(self, question: str) -> str:
        """The model's answer to `question` (stripped); the turn is kept for the next question.

        Raises:
            FmriInputError: a question `checked_question` refuses, or a conversation longer than
                the model's positions.
        """
        question = checked_question(question)
        batch = self.processor(text=[self.prompt(question)], fmri=[self.scan], return_tensors="pt").to(
            self.model.device
        )
        length, limit = batch["input_ids"].shape[1], self.model.config.max_positions
        if limit is not None and length + self.max_new_tokens > limit:
            raise FmriInputError(
                f"question: the prompt holds {length} tokens (the scan's {self.processor.placeholders_per_scan} and "
                f"{len(self.turns)} earlier turn(s)); with {self.max_new_tokens} new tokens it exceeds the model's "
                f"{limit} positions: start a new conversation or ask for fewer new tokens"
            )
        tokenizer = self.processor.tokenizer
        generated = self.model.generate(
            **batch,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            pad_token_id=self.processor.pad_token_id,
            stop_strings="\n",
            tokenizer=tokenizer,
        )
        answer = self.processor.decode(generated[0, length:], skip_special_tokens=True).split("\n")[0]
        self.turns.append((question, answer))
        return answer.strip()


__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "Conversation",
    "check_weights",
    "checked_question",
    "load_model",
    "load_processor",
    "read_scan",
]
