"""Stage 1 of fMRI-LM: train the neural tokenizer `FmriTokenizerModel` with 🤗 Accelerate.

Runs unchanged on a CPU, one GPU, several GPUs (DDP), FSDP2 or DeepSpeed: pick an accelerate
config from `recipes/configs/` (see `recipes/README.md`).

    accelerate launch --config_file recipes/configs/single_gpu.yaml recipes/stage1_tokenizer.py \
        --output_dir outputs/stage1 --num_epochs 30

Data: the embedded scans by default, or `--data_dir` (any folder the `modeling_fmrilm.io` readers
load; `--tr` when the files carry no repetition time). Subjects are split into training and
validation sets (`--validation_subjects`), never windows of one subject across both.
Contrastive loss: `--text_dataset` (a `datasets.load_dataset` folder with `subject` and `text`
columns, e.g. the descriptor corpus) embedded by a frozen text encoder (`--text_encoder`, default
MiniLM). Domain confusion: `--word_embeddings_model` (a local LM folder or Hub id).
Checkpoints: `--checkpointing_steps N` writes `output_dir/checkpoints/step_N`;
`--resume_from_checkpoint latest` (or a folder) continues from one. The final model + feature
extractor land in `output_dir/final` (written atomically).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing

from modeling_fmrilm.training_stage1 import Stage1Arguments, train_stage1


def build_parser() -> argparse.ArgumentParser:
    """One `--flag` per `Stage1Arguments` field, with its type, default and help."""
    parser = argparse.ArgumentParser(description="Train the fMRI-LM Stage 1 tokenizer with Accelerate.")
    hints = typing.get_type_hints(Stage1Arguments)
    for item in dataclasses.fields(Stage1Arguments):
        default = item.default if item.default is not dataclasses.MISSING else item.default_factory()
        options: dict[str, typing.Any] = {"default": default, "help": item.metadata.get("help", f"default: {default}")}
        hint = hints[item.name]
        if item.name == "config_overrides":
            options.update(type=json.loads, help='extra FmriTokenizerConfig fields as JSON, e.g. \'{"ema_decay": 0.9}\'')
        elif item.name == "mixed_precision":
            options["choices"] = ["no", "fp16", "bf16"]
        elif hint is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(hint) is tuple:
            options["nargs"] = "+"
        else:
            options["type"] = next(t for t in (int, float, str) if t in (hint, *typing.get_args(hint)))
        parser.add_argument(f"--{item.name}", **options)
    return parser


def main(argv: list[str] | None = None) -> None:
    namespace = build_parser().parse_args(argv)
    values = vars(namespace)
    values["cohorts"] = tuple(values["cohorts"])
    result = train_stage1(Stage1Arguments(**values))
    if result.history and "validation_r2" in result.history[-1]:
        print(f"held-out reconstruction R2 {result.history[-1]['validation_r2']:.3f}; model in {result.final_dir}")


if __name__ == "__main__":
    main(sys.argv[1:])
