"""The pipeline's settings and its cache (`modeling_fmrilm.pipeline`), with the steps replaced by stand-ins."""

import shutil
from dataclasses import replace

import pytest

from modeling_fmrilm import pipeline
from modeling_fmrilm.pipeline import STAGES, PipelineSettings, run_pipeline
from modeling_fmrilm.training.stage2 import Stage2TrainingArguments


@pytest.fixture
def trained(monkeypatch):
    """The steps `run_pipeline` runs, in order, each leaving what a finished step leaves."""
    calls = []

    def finish(stage, folder):
        calls.append(stage)
        shutil.rmtree(folder, ignore_errors=True)  # as every step replaces its folder
        (folder if stage == "corpus" else folder / "final").mkdir(parents=True)
        (folder / "README.md" if stage == "corpus" else folder / "final" / "config.json").write_text("{}")

    monkeypatch.setattr(pipeline, "run_corpus", lambda settings, scans, folder, command: finish("corpus", folder))
    monkeypatch.setattr(pipeline, "run_stage1", lambda settings, scans, corpus, folder: finish("stage1", folder))
    monkeypatch.setattr(pipeline, "run_stage2", lambda settings, scans, corpus, s1, folder: finish("stage2", folder))
    monkeypatch.setattr(pipeline, "run_stage3", lambda settings, corpus, s2, folder: finish("stage3", folder))
    monkeypatch.setattr(PipelineSettings, "scans", lambda self: ["scan"])
    return calls


def test_run_pipeline_reuses_steps_until_a_setting_they_depend_on_changes(trained, tmp_path):
    settings = PipelineSettings()
    outputs = run_pipeline(settings, tmp_path)
    assert trained == list(STAGES)
    assert outputs["corpus"] == tmp_path / "descriptor_corpus"
    assert outputs["stage3"] == tmp_path / "stage3_instruct" / "final"
    run_pipeline(settings, tmp_path)
    assert trained == list(STAGES)  # all four reused
    run_pipeline(replace(settings, stage2_epochs=3), tmp_path)
    assert trained == [*STAGES, "stage2", "stage3"]  # the corpus and Stage 1 do not read it
    run_pipeline(replace(settings, stage2_epochs=3, progress=False), tmp_path)
    assert trained == [*STAGES, "stage2", "stage3"]  # progress bars change no output
    run_pipeline(replace(settings, stage2_epochs=3, seed=1), tmp_path, through="stage1")
    assert trained == [*STAGES, "stage2", "stage3", "corpus", "stage1"]


def test_a_tuple_setting_is_reused_as_its_stamp_reads_back_and_retrains_stage3_alone_when_changed(trained, tmp_path):
    weighted = PipelineSettings(stage3_task_weights=("synthetic_group=1", "*=0.1"))
    run_pipeline(weighted, tmp_path)
    run_pipeline(weighted, tmp_path)  # the stamp holds the tuple as a JSON list: still the same settings
    assert trained == list(STAGES)
    run_pipeline(replace(weighted, stage3_task_weights=("*=0.5",)), tmp_path)
    assert trained == [*STAGES, "stage3"]


def test_run_pipeline_retrains_a_step_that_did_not_finish(trained, tmp_path):
    settings = PipelineSettings()
    run_pipeline(settings, tmp_path)
    (tmp_path / "stage1_tokenizer" / "final" / "config.json").unlink()  # interrupted before its final folder
    run_pipeline(settings, tmp_path)
    assert trained == [*STAGES, "stage1"]  # Stage 2 was made from the same settings: reused


def test_every_setting_names_the_first_step_it_changes():
    stages = {
        setting: PipelineSettings.__dataclass_fields__[setting].metadata["first_stage"]
        for setting in PipelineSettings.__dataclass_fields__
    }
    assert set(stages.values()) <= {*STAGES, None}
    settings = PipelineSettings()
    assert set(settings.key("corpus")) < set(settings.key("stage1")) < set(settings.key("stage3"))
    assert "stage2_epochs" in settings.key("stage2") and "stage2_epochs" not in settings.key("stage1")
    assert "progress" not in settings.key("stage3")


def test_training_arguments_select_the_epoch_on_validation_loss_only_when_asked(tmp_path):
    plain = PipelineSettings().training_arguments(Stage2TrainingArguments, tmp_path, 3)
    assert (plain.save_strategy, plain.load_best_model_at_end, plain.seed) == ("no", False, 42)
    selected = replace(PipelineSettings(seed=5), select_epochs=True, training_seed=None, progress=False)
    args = selected.training_arguments(Stage2TrainingArguments, tmp_path, 3)
    assert (args.eval_strategy, args.save_strategy, args.metric_for_best_model) == ("epoch", "epoch", "eval_loss")
    assert (args.load_best_model_at_end, args.greater_is_better, args.seed, args.disable_tqdm) == (
        True,
        False,
        5,
        True,
    )
    assert args.num_train_epochs == 3


def test_task_sources_follow_the_cohort_the_stages_train_on(tmp_path):
    demo = PipelineSettings().task_sources(tmp_path)
    assert (demo.tasks, demo.descriptor_scans, demo.corpus) == (["cohort", "descriptors"], "embedded", str(tmp_path))
    bench = PipelineSettings(seed=3, train_on_synthetic=True, synthetic_subjects=50).task_sources(tmp_path)
    assert (bench.tasks, bench.descriptor_scans) == (["cohort", "descriptors", "synthetic"], "all")
    assert (bench.synthetic_subjects, bench.synthetic_seed) == (50, 3)
