"""Stage 2 of fMRI-LM: a causal language model learns the fMRI tokens beside text, with `transformers.Trainer`.

    python recipes/stage2_align.py --fmri_tokenizer outputs/stage1/final --corpus outputs/descriptor_corpus \
        --output_dir outputs/stage2                                        # the small demo LM, CPU, minutes
    python recipes/stage2_align.py --output_dir out --fmri_tokenizer outputs/stage1/final \
        --corpus outputs/descriptor_corpus --base_model Qwen/Qwen3-0.6B --learning_rate 2e-5 --bf16 true
    torchrun --nproc_per_node 2 recipes/stage2_align.py ...   |   accelerate launch --config_file recipes/configs/ddp.yaml recipes/stage2_align.py ...

It needs the descriptor corpus (`datasets_scripts/build_descriptor_corpus.py`) and a Stage 1
folder (`recipes/stage1_tokenizer.py --text_dataset CORPUS`); without `--base_model` it builds a
small Qwen3-shaped LM with a BPE tokenizer trained on the corpus into `output_dir/language_model`.
It writes `output_dir/final`, which `AutoModelForCausalLM` and `AutoProcessor` load.
Every `TrainingArguments` flag works (`--max_steps`, `--gradient_checkpointing`, `--bf16`,
`--resume_from_checkpoint latest`, …), plus the stage's own (`Stage2Arguments`).
"""

from __future__ import annotations

from modeling_fmrilm.training.common import parse_arguments, process_group_destroyed_on_exit
from modeling_fmrilm.training.stage2 import Stage2Arguments, Stage2TrainingArguments, train_stage2


def main(argv: list[str] | None = None) -> None:
    stage_args, training_args = parse_arguments((Stage2Arguments, Stage2TrainingArguments), argv)
    result = train_stage2(stage_args, training_args)
    if result.trainer.is_world_process_zero():
        last = next((entry for entry in reversed(result.history) if "eval_loss" in entry), {})
        losses = ", ".join(
            f"{k[5:]} {v:.3f}" for k, v in last.items() if k.endswith(("_loss", "_accuracy")) and k != "eval_loss"
        )
        print(f"{'held-out ' + losses + '; ' if losses else ''}model and processor in {result.final_dir}")


if __name__ == "__main__":
    with process_group_destroyed_on_exit():
        main()
