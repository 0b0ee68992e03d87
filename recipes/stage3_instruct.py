"""Stage 3 of fMRI-LM: multi-task instruction tuning (LoRA or full) with `transformers.Trainer`, then
the evaluation harness (the model beside the majority and connectivity baselines, test subjects).

    python recipes/stage3_instruct.py --model outputs/stage2/final --corpus outputs/descriptor_corpus \
        --output_dir outputs/stage3                                      # the small model, CPU, minutes
    python recipes/stage3_instruct.py --model outputs/stage2/final --corpus outputs/descriptor_corpus \
        --tasks cohort descriptors synthetic --task_weights synthetic_group=1 "*=0.1" --lora_r 8 --lora_alpha 16 --output_dir out
    torchrun --nproc_per_node 2 recipes/stage3_instruct.py --model ... --corpus ... --output_dir out

`--model` is a Stage 2 folder (`recipes/stage2_align.py`'s `output_dir/final`). Writes `output_dir/adapter` (peft), `output_dir/final` (merged; loads with
`AutoModelForCausalLM` + `AutoProcessor`) and `output_dir/evaluation/evaluation.{md,json}`. Every
`TrainingArguments` flag works, plus the stage's own (`Stage3Arguments`). `--task_weights` takes
one loss weight per task in the order the tasks are built, or NAME=WEIGHT pairs (a task not named
weighs 1, or the weight of `*=WEIGHT`); the task names are in `output_dir/final/training_record.json`.
`--question_paraphrases N` asks each question in only the first N of its paraphrases (1: one
fixed question), in training and in the evaluation after it; give `fmrilm evaluate` the same flag.
The training and validation logs give each task's `{task}_first_token_loss` and
`_first_token_accuracy`: the label word's own figures (`{task}_loss` also averages the EOS).
"""

from __future__ import annotations

from modeling_fmrilm.pipeline import instruct_and_evaluate
from modeling_fmrilm.training.common import parse_arguments, process_group_destroyed_on_exit
from modeling_fmrilm.training.stage3 import Stage3Arguments, Stage3TrainingArguments


def main(argv: list[str] | None = None) -> None:
    stage_args, training_args = parse_arguments((Stage3Arguments, Stage3TrainingArguments), argv)
    result, report = instruct_and_evaluate(stage_args, training_args)
    if result.trainer.is_world_process_zero():
        if report is not None:
            print(report.to_markdown())
        print(f"merged model and processor in {result.final_dir}")


if __name__ == "__main__":
    with process_group_destroyed_on_exit():
        main()
