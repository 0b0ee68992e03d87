"""Stage 1 of fMRI-LM: train the neural tokenizer with `transformers.Trainer`.

Plain, under torchrun, or under accelerate with a config from `recipes/configs/` (see README):

    python recipes/stage1_tokenizer.py --output_dir outputs/stage1
    torchrun --nproc_per_node 2 recipes/stage1_tokenizer.py --output_dir outputs/stage1
    accelerate launch --config_file recipes/configs/ddp.yaml recipes/stage1_tokenizer.py --output_dir outputs/stage1

Arguments: every `transformers.TrainingArguments` flag (`--bf16`, `--gradient_accumulation_steps`,
`--save_steps`, `--resume_from_checkpoint latest`, `--push_to_hub`, …) plus the stage's own
(`Stage1Arguments`: data, subject split, windows, model, text and domain losses); `--flag_name`
and `--flag-name` both work, and a single `.json`/`.yaml` file may hold them all.
"""

from __future__ import annotations

from modeling_fmrilm.training.common import parse_arguments, process_group_destroyed_on_exit
from modeling_fmrilm.training.stage1 import Stage1Arguments, Stage1TrainingArguments, train_stage1


def main(argv: list[str] | None = None) -> None:
    stage_args, training_args = parse_arguments((Stage1Arguments, Stage1TrainingArguments), argv)
    result = train_stage1(stage_args, training_args)
    last = result.last_eval()
    if result.trainer.is_world_process_zero():
        held_out = f"held-out reconstruction R2 {last['eval_r2']:.3f}; " if last else ""
        print(f"{held_out}model in {result.final_dir}")


if __name__ == "__main__":
    with process_group_destroyed_on_exit():
        main()
