"""`fmrilm export` / `fmrilm push`: a Hub-ready folder that loads with trust_remote_code where fmrilm
is not installed (same logits), a model card filled from the checkpoint, its training record and
an evaluation, atomic replacement, and the upload through huggingface_hub to a local stand-in."""

from __future__ import annotations

import json
import shutil

import huggingface_hub
import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoProcessor

from modeling_fmrilm import FmriInputError, FmriProcessor, cli
from modeling_fmrilm.export import REMOTE_CODE_FILES, export_model
from modeling_fmrilm.hub import push_folder
from modeling_fmrilm.model_card import training_fields
from modeling_fmrilm.tasks.report import EvaluationReport, Row
from modeling_fmrilm.tasks.settings import EvaluationSettings
from tests.support import tiny_lm
from tests.support.remote_code import run_without_package

SPLIT = {
    "hcp/100": "train",
    "hcp/101": "train",
    "gw/1": "train",
    "gw/2": "validation",
    "hcp/102": "test",
    "gw/3": "test",
}


def evaluation_report() -> EvaluationReport:
    """A small report in the engine's own classes: the model beside the majority and both FC baselines."""
    runs = {
        "majority": [{"accuracy": 0.5, "balanced_accuracy": 0.5, "roc_auc": 0.5}] * 2,
        "brainmarks_fc": [
            {"accuracy": 0.75, "balanced_accuracy": 0.75, "roc_auc": 0.8},
            {"accuracy": 0.65, "balanced_accuracy": 0.65, "roc_auc": 0.7},
        ],
        "tangent_fc": [{"accuracy": 0.7, "balanced_accuracy": 0.7, "roc_auc": 0.72}] * 2,
        "fmrilm loglik": [
            {"accuracy": 0.6, "balanced_accuracy": 0.6, "roc_auc": 0.61},
            {"accuracy": 0.62, "balanced_accuracy": 0.62, "roc_auc": 0.6},
        ],
    }
    rows = [
        Row("synthetic_group", "classification", 2, method, 0 if method.startswith("fmrilm") else None, "single" if method.startswith("fmrilm") else None,
            list(values), [150, 150], [50, 50])
        for method, values in runs.items()
    ]  # fmt: skip
    return EvaluationReport(
        rows,
        EvaluationSettings(seeds=(0, 1), shots=(0,), n_resplits=0),
        "the subject split of /home/someone/run/final/training_record.json",
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model folder as a training run leaves it: weights, processor, training record, Trainer's pickle."""
    folder = tmp_path_factory.mktemp("final")
    corpus = tmp_path_factory.mktemp("corpus")
    (corpus / "cohort_reference.json").write_text(json.dumps({"atlas": "Toy-6"}))
    model, processor = tiny_lm.build("qwen3")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / "training_args.bin").write_bytes(b"pickled")
    history = [
        {"loss": 3.0, "epoch": 1.0, "step": 4},
        {
            "eval_loss": 3.5,
            "eval_f2t_loss": 2.25,
            "eval_f2f_loss": 4.5,
            "eval_t2t_loss": 3.75,
            "eval_f2f_accuracy": 0.125,
            "epoch": 2.0,
            "step": 8,
        },
    ]
    record = {"stage": 2, "arguments": {"corpus": str(corpus), "data_dir": "/data/private/cohort", "base_model": None},
              "num_processes": 1, "mixed_precision": "no", "split": {"seed": 0, "fractions": [0.5, 0.25, 0.25], "subjects": SPLIT},
              "log_history": history}  # fmt: skip
    (folder / "training_record.json").write_text(json.dumps(record))
    evaluation = tmp_path_factory.mktemp("evaluation")
    _, evaluation_json = evaluation_report().save(evaluation)
    return folder, evaluation_json, model


def test_exported_folder_loads_without_fmrilm_with_the_same_logits(trained, tmp_path):
    folder, evaluation_json, model = trained
    summary = export_model(folder, tmp_path / "export", evaluation_json, repo_id="org/fmrilm-toy")
    out = summary.folder
    assert summary.evaluated and summary.unrecorded == 0
    assert {
        "model.safetensors",
        "README.md",
        "processor_config.json",
        "tokenizer.json",
        "config.json",
        *REMOTE_CODE_FILES,
    } <= set(summary.files)
    assert not {"training_args.bin", "training_record.json"} & set(summary.files)  # no pickle, no subject ids
    assert not list(tmp_path.glob(".export-*"))  # no staging folder left
    scans = np.stack([tiny_lm.scan(1), tiny_lm.scan(2)])
    np.save(tmp_path / "scans.npy", scans)
    processor = FmriProcessor.from_pretrained(out)
    inputs = processor(
        text=["<fmri>\n### Question: Is this a control?\n### Answer:", "<fmri> Describe:"],
        fmri=list(scans),
        tr=2.0,
        return_tensors="pt",
        padding_side="left",
    )
    with torch.no_grad():
        expected = model(**inputs).logits
    script = f"""
import sys
import numpy as np
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoProcessor

model = AutoModelForCausalLM.from_pretrained({str(out)!r}, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained({str(out)!r}, trust_remote_code=True)
scans = np.load({str(tmp_path / "scans.npy")!r})
inputs = processor(text=["<fmri>\\n### Question: Is this a control?\\n### Answer:", "<fmri> Describe:"], fmri=list(scans), tr=2.0,
                   return_tensors="pt", padding_side="left")
with torch.no_grad():
    save_file({{"logits": model(**inputs).logits.contiguous()}}, {str(tmp_path / "logits.safetensors")!r})
assert "modeling_fmrilm" not in sys.modules
print(type(model).__module__, type(processor).__module__)
"""
    result = run_without_package(script, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    model_module, processor_module = result.stdout.split()
    assert model_module.startswith("transformers_modules") and processor_module.startswith("transformers_modules")
    torch.testing.assert_close(load_file(tmp_path / "logits.safetensors")["logits"], expected, rtol=0, atol=0)


def test_model_card_is_filled_from_the_checkpoint_record_and_evaluation(trained, tmp_path):
    folder, evaluation_json, _ = trained
    out = export_model(folder, tmp_path / "export", evaluation_json, repo_id="org/fmrilm-toy").folder
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "apache-2.0" and card.data.library_name == "transformers"
    assert {"fmri", "custom_code"} <= set(card.data.tags) and card.data.pipeline_tag == "text-generation"
    text = card.text
    for expected in (
        "| parcellation | Toy-6, 6 ROIs",  # atlas from the corpus's cohort reference named in the record
        "resampled to TR 2 s",
        "| windows | 16 frames (32 s) every 16 frames; the model reads the first 1 window(s)",
        "robust z-score per ROI per scan (median / IQR",
        "| tokens | 24 per window (6 ROIs × 4 patch(es) of 4 frames), codebook 12 × 8",
        "train 3, validation 1, test 2 subjects",
        "read by fmrilm's readers from `cohort`: gw (3 subjects), hcp (3 subjects)",
        "f2t loss 2.250, f2f loss 4.500, t2t loss 3.750, f2f accuracy 0.125",
        "Stage 2 of 3 (fMRI-text alignment): 8 optimisation steps, 2 epoch(s)",
        'repo = "org/fmrilm-toy"',
        "Not a medical device",
        "journal = {arXiv preprint arXiv:2511.21760}",
    ):
        assert expected in text, expected
    assert (
        "/data/private" not in text and "/home/someone" not in text and "hcp/100" not in text
    )  # no local path, no subject id
    table = evaluation_report().to_markdown().replace("/home/someone/run/final/", "")
    assert table in text  # the engine's own table: model, majority, both FC baselines, Δ vs FC
    assert (
        "| synthetic_group | fmrilm loglik | 0 | single | 150/50 | 0.610 ± 0.014 | 0.610 ± 0.014 | 0.605 ± 0.007 |  |  | -0.090 |"
        in text
    )
    assert "not evaluated" not in text


def test_model_card_without_evaluation_says_not_evaluated(trained, tmp_path):
    folder, _, _ = trained
    out = export_model(folder, tmp_path / "export").folder
    text = (out / "README.md").read_text()
    assert "**not evaluated**" in text and 'repo = "ORG/NAME"' in text


def test_failed_export_leaves_the_previous_folder_whole(trained, tmp_path, monkeypatch):
    folder, _, _ = trained
    out = export_model(folder, tmp_path / "export").folder
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    with pytest.raises(FmriInputError, match="already exists and is not empty"):
        export_model(folder, out)

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(FmriProcessor, "save_pretrained", broken)
    with pytest.raises(OSError, match="disk full"):
        export_model(folder, out, overwrite=True)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no staging or previous folder left


def test_export_errors_name_the_input(trained, tmp_path):
    folder, _, _ = trained
    (tmp_path / "bad.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(FmriInputError, match=r"bad\.json: expected the JSON `fmrilm evaluate` writes"):
        export_model(folder, tmp_path / "out", tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(FmriInputError, match=r"broken\.json: expected an evaluation JSON"):
        export_model(folder, tmp_path / "out", tmp_path / "broken.json")
    checkpoint = tmp_path / "checkpoint-8"
    shutil.copytree(folder, checkpoint, ignore=shutil.ignore_patterns("processor_config.json"))
    with pytest.raises(FmriInputError, match="checkpoint-8: expected a model folder with its processor"):
        export_model(checkpoint, tmp_path / "out")


def test_push_uploads_with_huggingface_hub_to_a_local_stand_in(trained, tmp_path, monkeypatch, capsys):
    folder, _, model = trained
    out = export_model(folder, tmp_path / "export").folder
    hub = tmp_path / "hub"
    calls = []
    monkeypatch.setattr(
        huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kwargs: calls.append((repo_id, kwargs))
    )
    monkeypatch.setattr(
        huggingface_hub.HfApi,
        "upload_folder",
        lambda self, folder_path, repo_id, repo_type: shutil.copytree(folder_path, hub / repo_type / repo_id),
    )
    cli.main(["push", "--folder", str(out), "--repo-id", "org/fmrilm-toy", "--private"])
    assert capsys.readouterr().out.strip() == "published to https://huggingface.co/org/fmrilm-toy"
    assert calls == [("org/fmrilm-toy", {"repo_type": "model", "private": True, "exist_ok": True})]
    uploaded = hub / "model" / "org" / "fmrilm-toy"
    loaded = AutoModelForCausalLM.from_pretrained(uploaded)
    processor = AutoProcessor.from_pretrained(uploaded)
    inputs = processor(text="<fmri> Describe:", fmri=tiny_lm.scan(3), tr=2.0, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits, rtol=0, atol=0)


@pytest.mark.parametrize(
    "repo_id,repo_type,message",
    [("name-only", "model", "expected ORG/NAME"), ("org/name", "space", "repo_type: expected one of")],
)
def test_push_folder_checks_its_arguments(trained, repo_id, repo_type, message):
    with pytest.raises(FmriInputError, match=message):
        push_folder(trained[0], repo_id, repo_type, api=object())


def test_stage3_record_names_its_tasks_and_the_stage2_base_model(tmp_path):
    stage2 = tmp_path / "stage2" / "final"
    stage2.mkdir(parents=True)
    (stage2 / "training_record.json").write_text(
        json.dumps({"stage": 2, "arguments": {"base_model": "Qwen/Qwen3-0.6B", "corpus": None}})
    )
    record = {"stage": 3, "arguments": {"model": str(stage2), "corpus": None}, "tasks": {"cohort": 1.0, "descriptors": 0.5},
              "log_history": [{"eval_cohort_loss": 0.5, "eval_cohort_accuracy": 0.75, "epoch": 1.0, "step": 3}]}  # fmt: skip
    fields = training_fields(record, "qwen3")
    assert fields["base_model_id"] == "Qwen/Qwen3-0.6B" and fields["base_model"] == "`Qwen/Qwen3-0.6B`"
    assert fields["stage_summary"].startswith(
        "Stage 3 of 3 (multi-task instruction tuning): 3 optimisation steps, 1 epoch(s)"
    )
    assert "tasks (loss weights): cohort 1, descriptors 0.5" in fields["stage_summary"]
    assert fields["final_losses"] == "cohort loss 0.500, cohort accuracy 0.750"


def test_overwrite_never_deletes_the_model_or_a_folder_export_did_not_write(trained, tmp_path, monkeypatch, capsys):
    """`--overwrite` refuses the run folder holding the model, the model folder's inside, the current
    folder, and any folder that is not an earlier export holding only what its marker lists."""
    folder, _, _ = trained
    run = tmp_path / "run"
    shutil.copytree(folder, run / "final")
    (run / "checkpoint-8").mkdir()
    (run / "checkpoint-8" / "trainer_state.json").write_text("{}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "notes.txt").write_text("mine")
    before = {path: path.read_bytes() for path in sorted(tmp_path.rglob("*")) if path.is_file()}
    monkeypatch.chdir(tmp_path / "elsewhere")
    cases = [
        (run, f"{run}: expected an export folder apart from the model folder {run / 'final'}, found one that holds it"),
        (run / "final", f"{run / 'final'}: expected an export folder apart from the model folder {run / 'final'}, found one that is it"),
        (run / "final" / "export", "found one that lies inside it"),
        (".", f"{elsewhere}: expected an export folder apart from the current folder, found one that is it"),
        (tmp_path, f"{tmp_path}: expected an export folder apart from the model folder {run / 'final'}, found one that holds it"),
        (tmp_path / "run" / "checkpoint-8", "--overwrite replaces only an earlier export holding nothing but the files its "
         "fmrilm_export.json lists; found no readable fmrilm_export.json (not a folder fmrilm export wrote)"),
    ]  # fmt: skip
    for output, message in cases:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit:
            cli.main(["export", "--model", str(run / "final"), "--output", str(output), "--overwrite"])
        err = capsys.readouterr().err
        assert exit.value.code == 2 and len(err.splitlines()) == 1 and message in err, (output, err)
    assert {
        path: path.read_bytes() for path in sorted(tmp_path.rglob("*")) if path.is_file()
    } == before  # nothing touched

    out = export_model(run / "final", tmp_path / "export").folder
    marker = json.loads((out / "fmrilm_export.json").read_text())
    assert marker["files"] == sorted(path.name for path in out.iterdir())
    assert export_model(run / "final", out, overwrite=True).folder == out  # an earlier export is replaced
    (out / ".git").mkdir()  # e.g. a clone of the Hub repository
    with pytest.raises(FmriInputError, match=r"found files it did not write: \['.git'\]"):
        export_model(run / "final", out, overwrite=True)
    assert (out / ".git").is_dir() and (out / "model.safetensors").is_file()
