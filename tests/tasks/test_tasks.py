"""tasks/: registry, prompts per paradigm, token ids from pre-computed codes, scoring against hand
computations, bins, shots, splits, metrics against scikit-learn, the evaluation engine, LoRA."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr
from sklearn.metrics import accuracy_score, balanced_accuracy_score, mean_absolute_error, roc_auc_score
from transformers import AutoModelForCausalLM, GPT2Config

from modeling_fmrilm import FmriInputError, FmriLMForCausalLM
from modeling_fmrilm.io import FmriScan
from modeling_fmrilm.processing_fmrilm import DEFAULT_CHAT_TEMPLATE
from modeling_fmrilm.splits import model_split
from modeling_fmrilm.tasks import (
    BIN_WORDS,
    TASKS,
    EvaluationSettings,
    LabelScorer,
    Prompt,
    ScanBlock,
    ScoreBins,
    Task,
    TaskData,
    answer_texts,
    build_prompts,
    evaluate,
    get_task,
    question_text,
    render_token_ids,
)
from modeling_fmrilm.tasks.evaluation_splits import select_shots, strata_of, stratified_split
from modeling_fmrilm.tasks.metrics import score_predictions, summarize
from modeling_fmrilm.tasks.prompts import DESCRIBE_REQUESTS, QUESTIONS, STATEMENTS, check_distinguishable
from modeling_fmrilm.tasks.scoring import softmax
from tests.support import tiny_lm


def long_context_model(seed: int = 0):
    """The tiny GPT-2 of tiny_lm with 1024 positions (k-shot prompts of the tiny BPE are long)."""
    tokenizer = tiny_lm.text_tokenizer()
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=1024, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0
    )
    lm = AutoModelForCausalLM.from_config(config).eval()
    return FmriLMForCausalLM.from_parts(
        tiny_lm.fmri_tokenizer(seed), lm, text_tokenizer=tokenizer, feature_extractor=tiny_lm.feature_extractor()
    )


@pytest.fixture(scope="module")
def built():
    return long_context_model()


def toy_scans(n: int, subjects_per_scan: int = 1) -> list[FmriScan]:
    return [FmriScan(tiny_lm.scan(100 + i), 2.0, f"s{i // subjects_per_scan:02d}", dataset="toy") for i in range(n)]


def toy_task(task: str | Task, targets, scans=None) -> TaskData:
    scans = scans or toy_scans(len(targets))
    task = get_task(task) if isinstance(task, str) else task
    return TaskData(
        task,
        scans,
        np.asarray(targets),
        [f"toy/{s.subject}" for s in scans],
        cohort_lines=[f"Cohort: {s.dataset}.\n" for s in scans],
    )


# -- registry and prompts -------------------------------------------------------------------------


def test_every_family_has_at_least_20_distinct_paraphrases_that_format_for_every_task():
    pools = {**QUESTIONS, "describe": DESCRIBE_REQUESTS}
    assert all(len(set(pool)) == len(pool) >= 20 for pool in pools.values()), {k: len(v) for k, v in pools.items()}
    fields = {"a": "Frontal", "b": "Parietal"}
    for task in TASKS.values():
        for template in QUESTIONS[task.question] + DESCRIBE_REQUESTS:
            text = template.format(**task.format_fields(fields))
            assert "{" not in text and text.strip()
        assert set(answer_texts(task, "open", fields)) and all(
            word.strip() in s for word, s in zip(task.label_words, answer_texts(task, "open", fields), strict=True)
        )
        assert task.question in STATEMENTS


def test_paraphrase_choice_is_seeded():
    task = get_task("sex")
    draw = lambda seed: [question_text(task, np.random.default_rng(seed)) for _ in range(1)]  # noqa: E731
    assert draw(3) == draw(3)
    assert len({question_text(task, np.random.default_rng(seed)) for seed in range(40)}) >= 10


def test_a_task_is_asked_in_its_first_paraphrases_only_when_told():
    task = get_task("sex")
    fields = task.format_fields(None)
    first = [template.format(**fields) for template in QUESTIONS[task.question][:3]]
    one, three = replace(task, paraphrases=1), replace(task, paraphrases=3)
    assert {question_text(one, np.random.default_rng(seed)) for seed in range(40)} == {first[0]}
    assert {question_text(three, np.random.default_rng(seed)) for seed in range(60)} == set(first)
    assert len({question_text(task, np.random.default_rng(seed)) for seed in range(60)}) > 3  # all, by default
    assert "{" not in question_text(one, np.random.default_rng(0), paradigm="open")  # the open requests are not cut
    with pytest.raises(FmriInputError, match="task 'sex': paraphrases expected None or >= 1, found 0"):
        replace(task, paraphrases=0)


def test_tasks_that_share_a_question_and_its_answers_are_refused_together():
    """Two tasks asked in the same words and answered by the same label words cannot both be taught on
    one prompt: the registered tasks (and the network-pair questions, one per pair) pass, the
    dynamics task asked as a diagnosis with the group task's words is refused by name."""
    pairs = [
        get_task("network_pair").with_fields(f"network_pair:{a}-{b}", a=a, b=b)
        for a, b in [("Visual", "Default"), ("Default", "Visual"), ("Visual", "Visual")]
    ]
    check_distinguishable([task for name, task in TASKS.items() if name != "network_pair"] + pairs)
    group = get_task("synthetic_group")
    assert get_task("synthetic_dynamics").question != group.question
    assert set(get_task("synthetic_dynamics").label_words).isdisjoint(group.label_words)
    as_diagnosis = Task(
        "dynamics_as_diagnosis",
        "classification",
        "diagnosis",
        "dynamics",
        group.label_words,
        {"control": 0, "patient": 1},
        {"condition": "slowed dynamics"},
    )
    with pytest.raises(FmriInputError, match="'synthetic_group' and 'dynamics_as_diagnosis'.*cannot tell them apart"):
        check_distinguishable([group, get_task("sex"), as_diagnosis])
    check_distinguishable([group, group])  # the same task twice is one task
    other_words = Task(
        "dynamics_other_words",
        "classification",
        "diagnosis",
        "dynamics",
        (" Typical", " Slow"),
        {"typical": 0, "slow": 1},
        {"condition": "slowed dynamics"},
    )
    check_distinguishable([group, other_words])


def test_task_validation_and_encoding():
    with pytest.raises(FmriInputError, match="every class index"):
        Task("bad", "classification", "sex", "sex", (" A", " B"), {"a": 0})
    with pytest.raises(FmriInputError, match="regression takes no value map"):
        Task("bad", "regression", "score", "age", BIN_WORDS, {"a": 0})
    sex = get_task("sex")
    assert (sex.encode("Female"), sex.encode(" male "), sex.encode("other")) == (1, 0, None)
    assert get_task("age").encode("31.5") == 31.5 and get_task("age").encode("old") is None
    assert sex.options == "Male or Female" and get_task("network_pair").options == "lower, typical or higher"
    with pytest.raises(FmriInputError, match="expected one of"):
        get_task("nope")


def test_template_rendering_per_paradigm(built):
    _, processor = built
    sex = get_task("sex")
    single = ScanBlock([("Q1?", None)], "Cohort: hcp.\n", "Adults at rest.\n")
    assert single.text() == "<fmri>\nCohort: hcp.\nAdults at rest.\n### Question: Q1?\n### Answer:"
    shot = ScanBlock([("Q0?", " Female")], "Cohort: hcp.\n")
    multi = ScanBlock([("Q1?", " Male"), ("Q2?", " higher"), ("Q3?", None)])
    prompt = Prompt([shot], multi)
    assert prompt.text() == (
        "<fmri>\nCohort: hcp.\n### Question: Q0?\n### Answer: Female\n"
        "<fmri>\n### Question: Q1?\n### Answer: Male\n### Question: Q2?\n### Answer: higher\n### Question: Q3?\n### Answer:"
    )
    assert answer_texts(sex, "single") == [" Male", " Female"]
    assert answer_texts(sex, "open") == [" The participant is Male.", " The participant is Female."]
    pair = get_task("network_pair").with_fields("pair", a="Frontal", b="Parietal")
    assert (
        answer_texts(pair, "open")[2]
        == " Coupling between the Frontal and Parietal networks is higher relative to the cohort."
    )
    assert "{topic}" not in question_text(pair, np.random.default_rng(0), paradigm="open")
    with pytest.raises(FmriInputError, match="needs the field 'a'"):
        question_text(get_task("network_pair"), np.random.default_rng(0))
    # the chat template: the scan is an fmri content part, answers are assistant turns
    assert processor.chat_template == DEFAULT_CHAT_TEMPLATE
    chat = Prompt([shot], ScanBlock([("Q1?", None)])).text(processor, chat_template=True)
    assert (
        chat
        == "### Question: <fmri>\nCohort: hcp.\nQ0?\n### Answer: Female<|endoftext|>\n### Question: <fmri>\nQ1?\n### Answer:"
    )


def test_prompt_token_ids_from_codes_match_the_processor_and_model_path():
    model, processor = tiny_lm.build("gpt2", windows_per_scan=2)
    scans = [tiny_lm.scan(1), tiny_lm.scan(2, n_timepoints=60)]
    text = "<fmri>\n### Question: Sex?\n### Answer: Male\n<fmri>\n### Question: Sex?\n### Answer:"
    inputs = processor(text=text, fmri=scans, tr=2.0, return_tensors="pt")
    expected = model.insert_fmri_tokens(inputs["input_ids"], inputs["fmri_values"])[0].tolist()
    codes = (model.fmri_to_token_ids(inputs["fmri_values"]) - model.config.first_code_token_id).reshape(2, -1).tolist()
    assert render_token_ids(text, codes, processor) == expected
    scorer = LabelScorer(model, processor)
    context = scorer.prompt_ids(text, [FmriScan(s, 2.0, f"x{i}") for i, s in enumerate(scans)])
    assert context == expected
    connectivity = scorer.connectivity_of([context])["fmri_connectivity"]  # 2 scans x 2 windows, in marker order
    torch.testing.assert_close(connectivity, model.fmri_connectivity(inputs["fmri_values"]), rtol=0, atol=0)
    with torch.no_grad():
        online = model(**inputs).logits
        precomputed = model(input_ids=torch.tensor([expected]), fmri_connectivity=connectivity).logits
    torch.testing.assert_close(online, precomputed)
    with pytest.raises(FmriInputError, match=r"found 2 <fmri> marker\(s\) in the prompt and 1 code list"):
        render_token_ids(text, codes[:1], processor)
    with pytest.raises(FmriInputError, match="expected 48 codes"):
        render_token_ids(text, [codes[0], codes[1][:5]], processor)


# -- scoring ----------------------------------------------------------------------------------------


def hand_loglikelihood(model, context: list[int], answer: list[int], connectivity: dict | None = None) -> float:
    """Sum of log p(answer token | everything before), one unpadded sequence (`connectivity`: its
    `fmri_connectivity`, for a model that reads that stream)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([context + answer]), **(connectivity or {})).logits[0].double()
    log_probs = torch.log_softmax(logits, dim=-1)
    return float(sum(log_probs[len(context) - 1 + t, token] for t, token in enumerate(answer)))


def test_single_and_multi_token_label_words_are_scored_as_whole_continuations(built):
    model, processor = built
    task = Task("mixed", "classification", "sex", None, (" is", " Autism", " the"), {"a": 0, "b": 1, "c": 2})
    scorer = LabelScorer(model, processor, batch_size=4)
    lengths = [len(ids) for ids in scorer.answer_ids(answer_texts(task))]
    assert lengths[0] == 1 and lengths[1] > 1 and lengths[2] == 1
    scans = toy_scans(3)
    texts = [
        "<fmri>\n### Question: A?\n### Answer:",
        "<fmri>\nCohort: toy.\n### Question: A longer one?\n### Answer:",
        "<fmri>\n### Question: B?\n### Answer:",
    ]
    contexts = [scorer.prompt_ids(text, [scan]) for text, scan in zip(texts, scans, strict=True)]
    assert len({len(c) for c in contexts}) > 1  # different lengths: the left padding is exercised
    scores = scorer.loglikelihoods(contexts, answer_texts(task))
    answer_ids = scorer.answer_ids(answer_texts(task))
    expected = np.array(
        [[hand_loglikelihood(model, c, a, scorer.connectivity_of([c])) for a in answer_ids] for c in contexts]
    )
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        softmax(scores), np.exp(expected) / np.exp(expected).sum(1, keepdims=True), rtol=1e-4, atol=1e-9
    )


def test_loglikelihoods_asked_again_come_from_the_kept_scores_in_the_order_asked(built, monkeypatch):
    model, processor = built
    scorer = LabelScorer(model, processor, batch_size=4)
    contexts = [
        scorer.prompt_ids(f"<fmri>\n### Question: Q{i}?\n### Answer:", [scan]) for i, scan in enumerate(toy_scans(3))
    ]
    answers = answer_texts(get_task("sex"))
    fresh = LabelScorer(model, processor, batch_size=4).loglikelihoods(contexts, answers)
    scorer.loglikelihoods(contexts[:2], answers)
    calls = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda *a, **k: calls.append(k["input_ids"].shape[0]) or forward(*a, **k))
    again = scorer.loglikelihoods([contexts[2], contexts[0], contexts[1]], answers)
    np.testing.assert_allclose(again, fresh[[2, 0, 1]], rtol=1e-6)
    assert sum(calls) == len(answers)  # only the new context ran, once per answer
    other = scorer.loglikelihoods(contexts[:1], answers[::-1])  # other answers: another key
    np.testing.assert_allclose(other, fresh[:1, ::-1], rtol=1e-5, atol=1e-6)


class LeaningScorer:
    """A stand-in scorer: log-likelihoods `[5 + s, 0]` where `s` is +1 on class-0 scans and -1 on
    class-1 scans, so it ranks every scan right but always prefers the first answer."""

    def __init__(self, signs: dict[int, float]) -> None:
        self.signs = signs

    def loglikelihoods(self, contexts, answers):
        return np.array([[5.0 + self.signs[context[0]], 0.0] for context in contexts])


def test_calibrated_scoring_removes_the_label_prior_that_makes_raw_loglik_a_constant_guess():
    from modeling_fmrilm.tasks.predictions import _probabilities

    labels = np.array([0, 1] * 20)
    scorer = LeaningScorer({i: 1.0 if label == 0 else -1.0 for i, label in enumerate(labels)})
    contexts = [[i] for i in range(len(labels))]
    test, reference = np.arange(20), np.arange(20, 40)
    raw = _probabilities(scorer, [contexts[i] for i in test], [" Male", " Female"], "loglik")
    assert (raw.argmax(1) == 0).all() and balanced_accuracy_score(labels[test], raw.argmax(1)) == 0.5
    calibrated = _probabilities(
        scorer,
        [contexts[i] for i in np.concatenate([test, reference])],
        [" Male", " Female"],
        "calibrated",
        labels[reference],
    )
    assert calibrated.shape == (40, 2)
    assert balanced_accuracy_score(labels[test], calibrated[:20].argmax(1)) == 1.0
    # the offsets are class-balanced: four times as many class-0 reference items move nothing
    lopsided = np.concatenate([test, reference[labels[reference] == 0].repeat(4), reference[labels[reference] == 1]])
    again = _probabilities(
        scorer, [contexts[i] for i in lopsided], [" Male", " Female"], "calibrated", labels[lopsided[20:]]
    )
    np.testing.assert_allclose(again[:20], calibrated[:20], rtol=1e-12)


def test_calibrated_scores_are_loglik_less_offsets_from_label_balanced_training_items(built):
    from modeling_fmrilm.tasks.predictions import calibration_items, label_offsets, model_predictions

    model, processor = built
    labels = np.array([0, 1, 1, 0] * 10)
    data = toy_task("sex", labels)
    train, test = stratified_split(labels, 0.25, 0, data.split_groups)
    reference = calibration_items(data, labels, train, 3, 2, "single")
    assert set(reference) <= set(train) and np.bincount(labels[reference]).tolist() == [
        15,
        15,
    ]  # 30 training items: 15 per label
    scorer = LabelScorer(model, processor)
    raw = model_predictions(scorer, data, labels, train, test, 2, 3, "single", "loglik")
    calibrated = model_predictions(scorer, data, labels, train, test, 2, 3, "single", "calibrated")
    prompts = build_prompts(data, labels, train, np.concatenate([test, reference]), 2, 3)
    assert all(
        set(shots) <= set(train) and data.subject_keys[i] not in {data.subject_keys[j] for j in shots}
        for (_, shots), i in zip(prompts, np.concatenate([test, reference]), strict=True)
    )
    hand = scorer.loglikelihoods(
        [scorer.prompt_ids(p.text(processor), p.scans) for p, _ in prompts[len(test) :]], answer_texts(data.task)
    )
    offsets = label_offsets(hand - np.log(np.exp(hand).sum(1, keepdims=True)), labels[reference])
    np.testing.assert_allclose(calibrated, softmax(np.log(raw) - offsets), rtol=1e-6, atol=1e-9)


def test_constrained_generation_follows_the_label_prefix_tree(built):
    model, processor = built
    scorer = LabelScorer(model, processor)
    answers = [" Male", " Female", " mean", " higher"]
    answer_ids = scorer.answer_ids(answers)
    eos = processor.tokenizer.eos_token_id
    contexts = [scorer.prompt_ids("<fmri>\n### Question: Which?\n### Answer:", [scan]) for scan in toy_scans(4)]
    choices = scorer.constrained_choices(contexts, answers)
    for context, choice in zip(contexts, choices, strict=True):
        prefix: list[int] = []
        while True:  # greedy by hand over the allowed tokens
            allowed = {a[len(prefix)] for a in answer_ids if len(a) > len(prefix) and a[: len(prefix)] == prefix}
            if prefix in answer_ids:
                allowed.add(eos)
            if not allowed:
                break
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([context + prefix]), **scorer.connectivity_of([context])).logits[
                    0, -1
                ]
            best = max(allowed, key=lambda token: float(logits[token]))
            if best == eos:
                break
            prefix.append(best)
            if len(prefix) == max(len(a) for a in answer_ids):
                break
        assert answer_ids[choice] == prefix


def test_pooled_hidden_states_average_the_prompt_tokens(built):
    model, processor = built
    scorer = LabelScorer(model, processor)
    contexts = [
        scorer.prompt_ids(t, [s])
        for t, s in zip(["<fmri> a", "<fmri>\n### Question: longer?"], toy_scans(2), strict=True)
    ]
    pooled = scorer.pooled_hidden_states(contexts)
    with torch.no_grad():
        alone = [
            model(input_ids=torch.tensor([c]), **scorer.connectivity_of([c]), output_hidden_states=True)
            .hidden_states[-1][0]
            .mean(0)
            .numpy()
            for c in contexts
        ]
    np.testing.assert_allclose(pooled, np.stack(alone), rtol=1e-4, atol=1e-5)


# -- bins, shots, splits ------------------------------------------------------------------------------


def test_bins_are_training_quantiles_and_ignore_test_values():
    train = np.array([1.0, 2, 3, 4, 5, 6, 7, 8, 9])
    bins = ScoreBins.fit(train)
    np.testing.assert_allclose(bins.edges, np.quantile(train, [1 / 3, 2 / 3]))
    assert bins.transform(train).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    np.testing.assert_allclose(bins.centers, [2, 5, 8])
    assert bins.transform([-100, 100]).tolist() == [0, 2]
    np.testing.assert_allclose(bins.expected_value(np.array([[0, 1, 0], [0.5, 0, 0.5]])), [5, 5])
    with pytest.raises(FmriInputError, match="empty"):
        ScoreBins.fit([1.0, 1.0, 1.0, 2.0])


def test_evaluation_fits_bins_on_training_subjects_only(built, monkeypatch):
    model, processor = built
    fitted = []
    original = ScoreBins.fit.__func__
    monkeypatch.setattr(
        ScoreBins,
        "fit",
        classmethod(lambda cls, y, n_bins=3: fitted.append(np.asarray(y).copy()) or original(cls, y, n_bins)),
    )
    targets = np.arange(12, dtype=float) * 10 + 0.5
    data = toy_task("age", targets)
    settings = EvaluationSettings(seeds=(0,), shots=(0,), n_resplits=0, probe=False)
    evaluate([data], model, processor, settings, progress=False)
    train, test = stratified_split(strata_of(targets, True), settings.test_fraction, 0, data.split_groups)
    assert fitted and all(set(values.tolist()) == set(targets[train].tolist()) for values in fitted)
    assert not set(targets[test].tolist()) & set(np.concatenate(fitted).tolist())


def test_shots_are_label_balanced_training_examples_never_from_the_evaluated_subject():
    scans = toy_scans(24, subjects_per_scan=2)  # two scans per subject
    labels = np.tile([0, 1, 1, 0], 6)
    data = toy_task("sex", labels, scans)
    train, test = stratified_split(labels, 0.25, 0, data.split_groups)
    for k in (2, 4, 10):
        prompts = build_prompts(data, labels, train, test, k, seed=1)
        assert len(prompts) == len(test)
        for (prompt, shots), i in zip(prompts, test, strict=True):
            assert len(shots) == k and set(shots) <= set(train)
            assert data.subject_keys[i] not in {data.subject_keys[j] for j in shots}
            counts = np.bincount(labels[shots], minlength=2)
            assert abs(counts[0] - counts[1]) <= 1
            assert prompt.text().count("<fmri>") == k + 1 and prompt.scans[-1] is scans[i]
    # the evaluated subject's other scan is excluded even when the candidates include it
    shots = select_shots(
        np.arange(24),
        labels,
        20,
        np.random.default_rng(0),
        exclude_groups=["toy/s00", "toy/s01"],
        groups=data.split_groups,
    )
    assert not {0, 1, 2, 3} & set(shots.tolist())
    with pytest.raises(FmriInputError, match="eligible"):
        select_shots(
            np.arange(24),
            labels,
            21,
            np.random.default_rng(0),
            exclude_groups=["toy/s00", "toy/s01"],
            groups=data.split_groups,
        )


def test_stratified_split_keeps_families_together_and_strata_in_proportion():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [40, 20, 20])
    families = [f"f{i // 2}" for i in range(80)]  # pairs of siblings (same label)
    train, test = stratified_split(labels, 0.25, 3, families)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(80))
    assert not {families[i] for i in train} & {families[i] for i in test}
    assert np.bincount(labels[test]).tolist() in ([10, 6, 4], [10, 4, 6])  # 10 of 40 families, by largest remainders
    again = stratified_split(labels, 0.25, 3, families)
    assert np.array_equal(again[1], test) and not np.array_equal(stratified_split(labels, 0.25, 4, families)[1], test)
    scores = rng.normal(size=30)
    strata = strata_of(scores, True)
    assert np.bincount(strata).tolist() == [10, 10, 10] and strata[scores.argmax()] == 2


# -- metrics --------------------------------------------------------------------------------------


def test_metrics_equal_scikit_learn_on_fixed_predictions():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    probabilities = softmax(rng.normal(size=(40, 2)) + 2 * np.eye(2)[y])
    metrics = score_predictions(get_task("sex"), y, probabilities)
    predicted = probabilities.argmax(1)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y, predicted))
    assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, predicted))
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(y, probabilities[:, 1]))
    hard = score_predictions(get_task("sex"), y, np.eye(2)[predicted])
    assert hard["roc_auc"] == pytest.approx(hard["balanced_accuracy"])  # the paper's hard labels
    y3 = rng.integers(0, 3, 60)
    p3 = softmax(rng.normal(size=(60, 3)))
    pair = score_predictions(get_task("network_pair"), y3, p3)
    assert pair["roc_auc"] == pytest.approx(roc_auc_score(y3, p3, multi_class="ovr"))
    single_class = score_predictions(get_task("sex"), np.zeros(5, int), probabilities[:5])
    assert single_class["roc_auc"] is None and "one class" in single_class["undefined"]["roc_auc"]
    scores = rng.normal(30, 5, 50)
    bins = ScoreBins.fit(scores[:30])
    values = scores + rng.normal(0, 3, 50)
    regression = score_predictions(get_task("age"), scores, values=values, bins=bins)
    assert regression["mae"] == pytest.approx(mean_absolute_error(scores, values))
    assert regression["pearson_r"] == pytest.approx(pearsonr(scores, values)[0])
    assert regression["accuracy"] == pytest.approx(accuracy_score(bins.transform(scores), bins.transform(values)))
    constant = score_predictions(
        get_task("age"), scores, values=np.full(50, 30.0) + 1e-15 * rng.normal(size=50), bins=bins
    )
    assert constant["pearson_r"] is None and constant["undefined"]["pearson_r"] == "constant prediction"
    summary = summarize([{"accuracy": 0.5}, {"accuracy": 0.7}, {"accuracy": None}], ["accuracy"])["accuracy"]
    assert summary["mean"] == pytest.approx(0.6) and summary["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert (summary["n"], summary["undefined"]) == (2, 1)


# -- the engine ---------------------------------------------------------------------------------


def test_evaluate_reports_model_and_baselines_on_the_same_test_subjects(built, tmp_path):
    model, processor = built
    rng = np.random.default_rng(0)
    scans = toy_scans(16)
    sex = toy_task("sex", rng.integers(0, 2, 16), scans)
    age = toy_task("age", rng.normal(30, 5, 16), scans)
    settings = EvaluationSettings(
        seeds=(0, 1),
        shots=(0, 2, 40),
        paradigms=("single", "multi", "open"),
        scoring=("loglik", "calibrated", "constrained"),
        n_resplits=2,
    )
    report = evaluate([sex, age], model, processor, settings, progress=False)
    methods = {(row.task, row.method, row.shots, row.paradigm, row.resplits) for row in report.rows}
    for task in ("sex", "age"):
        for baseline in ("majority", "brainmarks_fc", "tangent_fc"):
            assert {(task, baseline, None, None, None), (task, baseline, None, None, 2)} <= methods
            assert report.row(task, baseline, resplits=True).label.endswith(" (2 re-splits)")
        for scoring in ("loglik", "calibrated", "constrained"):
            for paradigm in ("single", "multi", "open"):
                row = report.row(task, f"fmrilm {scoring}", 2, paradigm)
                assert len(row.runs) == 2 and not row.skipped
                assert row.n_test == report.row(task, "brainmarks_fc").n_test  # same splits
    assert "eligible" in report.row("sex", "fmrilm loglik", 40, "single").skipped  # more shots than training subjects
    assert len(report.row("age", "fmrilm ridge probe", 0, "single").runs) == 2
    markdown, record = report.save(tmp_path)
    text = markdown.read_text()
    assert "FC, Brainmarks protocol" in text and "not run" in text and "Δ vs FC" in text
    loaded = json.loads(record.read_text())
    assert loaded["settings"]["seeds"] == [0, 1] and len(loaded["rows"]) == len(report.rows)
    assert {"mean", "std", "n", "undefined"} <= set(loaded["rows"][0]["summary"]["accuracy"])


def test_model_views_are_the_processors_windows_and_the_tokenizers_decoding():
    """Two windows per scan: each view joins a scan's windows in time, in order."""
    model, processor = tiny_lm.build("gpt2", windows_per_scan=2)
    scans = toy_scans(3)
    windows, decoded = LabelScorer(model, processor).model_views(scans)
    expected = processor(
        text=["<fmri>"] * 3, fmri=[s.data for s in scans], tr=[s.tr for s in scans], return_tensors="pt"
    )["fmri_values"]
    reconstructed = model.fmri_tokenizer.decode(model.fmri_tokenizer.encode(expected)).detach().numpy()

    def joined(array):  # (3 scans x 2 windows, rois, frames) -> (3, rois, 2 x frames)
        return np.concatenate([array[0::2], array[1::2]], axis=2)

    assert (
        [w.shape for w in windows] == [d.shape for d in decoded] == [(tiny_lm.NUM_ROIS, 2 * tiny_lm.WINDOW_LENGTH)] * 3
    )
    np.testing.assert_allclose(np.stack(windows), joined(expected.numpy()), rtol=1e-6)
    np.testing.assert_allclose(np.stack(decoded), joined(reconstructed), rtol=1e-5, atol=1e-6)


def test_view_rows_find_a_coupling_in_the_window_the_model_reads(built):
    """Class 1 couples ROIs 0 and 1 within the first window (the one the model reads) and nowhere
    else: the FC of that window separates the classes; the switch leaves the rows out."""
    model, processor = built
    rng = np.random.default_rng(0)
    targets = np.tile([0, 1], 12)
    scans = []
    for i, target in enumerate(targets):
        data = rng.standard_normal((tiny_lm.NUM_ROIS, 40)).astype(np.float32)
        if target:
            data[1, : tiny_lm.WINDOW_LENGTH] = (
                data[0, : tiny_lm.WINDOW_LENGTH] + 0.1 * data[1, : tiny_lm.WINDOW_LENGTH]
            )
        scans.append(FmriScan(data, 2.0, f"s{i:02d}", dataset="toy"))
    data = toy_task("sex", targets, scans)
    settings = EvaluationSettings(seeds=(0, 1), shots=(0,), n_resplits=0)
    report = evaluate([data], model, processor, settings, progress=False)
    window = report.row("sex", "window_fc")
    assert window.summary()["balanced_accuracy"]["mean"] > 0.9
    assert (
        window.n_test == report.row("sex", "token_fc").n_test == report.row("sex", "fmrilm loglik", 0, "single").n_test
    )
    assert "FC of the model's tokens, decoded" in report.to_markdown()
    without = evaluate([data], model, processor, replace(settings, view_probes=False), progress=False)
    assert not {"window_fc", "token_fc"} & {row.method for row in without.rows}


def test_evaluate_uses_the_models_split_test_subjects(built):
    from modeling_fmrilm.splits import SubjectSplit

    model, processor = built
    data = toy_task("sex", np.tile([0, 1], 6))
    assignment = {
        key: split
        for key, split in zip(data.subject_keys, ["train"] * 7 + ["validation"] * 2 + ["test"] * 3, strict=True)
    }
    report = evaluate(
        [data],
        model,
        processor,
        EvaluationSettings(seeds=(0, 1), shots=(0,), n_resplits=3),
        SubjectSplit(assignment),
        progress=False,
    )
    assert report.row("sex", "fmrilm loglik", 0, "single").n_test == [3, 3]
    assert report.row("sex", "majority").n_train == [7, 7]
    resplits = report.row("sex", "majority", resplits=True)
    assert resplits.resplits == 3 and resplits.label == "majority / mean (3 re-splits)"
    assert resplits.n_train == [7, 7, 7] and resplits.n_test == [
        3,
        3,
        3,
    ]  # the same sizes, validation left out likewise


def test_baselines_only_and_model_split_from_a_training_record(tmp_path):
    data = toy_task("sex", np.tile([0, 1], 8))
    report = evaluate([data], settings=EvaluationSettings(seeds=(0,), n_resplits=0), progress=False)
    assert {row.method for row in report.rows} == {"majority", "brainmarks_fc", "tangent_fc"}
    (tmp_path / "training_record.json").write_text(
        json.dumps({"split": {"seed": 3, "fractions": [0.8, 0.1, 0.1], "subjects": {"toy/s00": "test"}}})
    )
    split = model_split(tmp_path)
    assert split.of("toy/s00") == "test" and split.seed == 3
    with pytest.raises(FmriInputError, match="give both"):
        evaluate([data], model=object(), settings=EvaluationSettings(seeds=(0,)))


def test_merged_reports_concatenate_each_rows_runs_and_count_all_resplits():
    from modeling_fmrilm.tasks.report import merge_reports

    data = toy_task("sex", np.tile([0, 1], 8))
    reports = [
        evaluate([data], settings=EvaluationSettings(seeds=(seed,), n_resplits=2), progress=False) for seed in (0, 1)
    ]
    merged = merge_reports(reports)
    assert merged.settings.seeds == (0, 1) and merged.settings.n_resplits == 4
    majority = merged.row("sex", "majority")
    assert majority.runs == reports[0].row("sex", "majority").runs + reports[1].row("sex", "majority").runs
    resplits = merged.row("sex", "tangent_fc", resplits=True)
    assert resplits.resplits == 4 and "FC, tangent space (4 re-splits)" in merged.to_markdown()
    first, second = (report.row("sex", "tangent_fc", resplits=True).runs for report in reports)
    assert resplits.runs == first + second and first != second  # each seed's report draws its own re-splits
    other = evaluate(
        [toy_task("adhd", np.tile([0, 1], 8))], settings=EvaluationSettings(seeds=(2,), n_resplits=0), progress=False
    )
    union = merge_reports([reports[0], other])
    assert [row.task for row in union.rows][0] == "sex" and union.row("adhd", "majority").runs == other.row(
        "adhd", "majority"
    ).runs
    assert len(union.row("sex", "majority").runs) == 1  # a task only one report has keeps that report's runs
    with pytest.raises(FmriInputError, match="at least one report"):
        merge_reports([])


def test_lora_adapter_saved_and_reloaded_gives_identical_scores(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    model, processor = long_context_model(seed=1)
    peft_model = get_peft_model(
        model,
        LoraConfig(
            r=4, lora_alpha=8, target_modules=["c_attn", "c_proj"], init_lora_weights=False, fan_in_fan_out=True
        ),
    )
    contexts = [
        LabelScorer(peft_model, processor).prompt_ids("<fmri>\n### Question: Sex?\n### Answer:", [scan])
        for scan in toy_scans(3)
    ]
    answers = [" Male", " Female"]
    before = LabelScorer(peft_model, processor).loglikelihoods(contexts, answers)
    base_scores = LabelScorer(long_context_model(seed=1)[0], processor).loglikelihoods(contexts, answers)
    assert not np.allclose(before, base_scores)  # the adapter changes the scores
    peft_model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(long_context_model(seed=1)[0], tmp_path / "adapter")
    after = LabelScorer(reloaded, processor).loglikelihoods(contexts, answers)
    np.testing.assert_array_equal(before, after)


def test_a_blanked_stream_no_longer_reaches_the_answer_and_the_table_has_its_rows(built):
    """With one stream blanked (its positions fed the mean embedding over training scans), scans that
    differ only in that stream score alike; evaluate(blank_streams=True) adds both blanked rows on the
    same test subjects, after the unblanked ones."""
    model, processor = built
    scorer = LabelScorer(model, processor)
    scans = toy_scans(6)
    context = scorer.prompt_ids("<fmri>\n### Question: Which?\n### Answer:", [scans[0]])
    ids = torch.tensor([list(context)])
    rows = scorer.connectivity_of([context])["fmri_connectivity"]
    other_rows = scorer.connectivity_of([scorer.prompt_ids("<fmri>", [scans[1]])])["fmri_connectivity"]
    other_codes = torch.tensor([list(scorer.prompt_ids("<fmri>\n### Question: Which?\n### Answer:", [scans[1]]))])
    assert not torch.equal(ids, other_codes) and not torch.equal(rows, other_rows)
    with torch.no_grad():
        plain = model(input_ids=ids, fmri_connectivity=rows).logits
        assert not torch.allclose(plain, model(input_ids=ids, fmri_connectivity=other_rows).logits)
        with scorer.blanked("connectivity", scans[2:]):
            blanked = model(input_ids=ids, fmri_connectivity=rows).logits
            torch.testing.assert_close(
                blanked, model(input_ids=ids, fmri_connectivity=other_rows).logits, rtol=0, atol=0
            )
            torch.testing.assert_close(blanked, model(input_ids=ids).logits, rtol=0, atol=0)  # no rows needed
            assert not torch.allclose(blanked, model(input_ids=other_codes, fmri_connectivity=rows).logits)
        assert not torch.allclose(blanked, plain)
        with scorer.blanked("codes", scans[2:]):
            torch.testing.assert_close(
                model(input_ids=ids, fmri_connectivity=rows).logits,
                model(input_ids=other_codes, fmri_connectivity=rows).logits,
                rtol=0,
                atol=0,
            )
    assert model.stream_blanks == {} and scorer.blanked_stream is None
    with (
        pytest.raises(FmriInputError, match="expected one of the model's streams"),
        model.blank_stream("dynamics", torch.zeros(1, 32)),
    ):
        pass

    rng = np.random.default_rng(0)
    data = toy_task("sex", rng.integers(0, 2, 12), toy_scans(12))
    settings = EvaluationSettings(
        seeds=(0,), shots=(0,), scoring=("loglik", "constrained"), n_resplits=0, view_probes=False, blank_streams=True
    )
    report = evaluate([data], model, processor, settings, progress=False)
    methods = [row.label for row in report.rows if row.is_model]
    assert methods == [
        "fmrilm loglik", "fmrilm constrained",
        "fmrilm loglik, codes blanked", "fmrilm constrained, codes blanked",
        "fmrilm loglik, connectivity blanked", "fmrilm constrained, connectivity blanked",
    ]  # fmt: skip
    assert [row.blanked for row in report.rows if row.is_model] == [
        None,
        None,
        "codes",
        "codes",
        "connectivity",
        "connectivity",
    ]
    assert (
        report.row("sex", "fmrilm loglik", 0, "single", blanked="codes").n_test
        == report.row("sex", "fmrilm loglik", 0, "single").n_test
    )
    n_test = report.row("sex", "fmrilm loglik", 0, "single").n_test
    assert all(row.n_test == n_test and len(row.runs) == 1 for row in report.rows if row.is_model)
    # the kept scores are per blanked stream: a blanked run never reads the unblanked scores
    plain_scores = scorer.loglikelihoods([context], [" Male", " Female"])
    with scorer.blanked("connectivity", scans[2:]):
        assert not np.allclose(scorer.loglikelihoods([context], [" Male", " Female"]), plain_scores)
