"""Instruction prompts: paraphrase pools, the three paradigms, and prompts rendered into token ids.

Layout of one scan's block (the paper's), the scan first as in Stage 2:

    <fmri>
    {cohort line}{description}### Question: {question}
    ### Answer:{answer}

The cohort line and the description end with a newline when present; they are left out where
they would give the answer away (the cohort task has no cohort line). Paradigms:

- `single`: one question, the answer is a label word (`" Male"`);
- `multi`: several questions about the same scan in one block, each answered in turn;
- `open`: an open-ended request ("Describe …"), answered by a whole statement that carries the
  label word (`" The participant is Male."`): the statements are scored as whole continuations,
  so no free text is ever parsed.

k-shot prompts put k answered blocks (other subjects' scans) before the query block. With a chat
template the same blocks become user/assistant turns (`{"type": "fmri"}` content parts) rendered by
the processor's `apply_chat_template`.

Every question is drawn from a pool of paraphrases written for this package (at least 20 per
family), by a seeded generator, so the same seed gives the same prompts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

from ..configuration_fmrilm import FMRI_START_TOKEN, fmri_code_tokens
from ..errors import FmriInputError
from .registry import Task

Paradigm = Literal["single", "multi", "open"]
PARADIGMS = get_args(Paradigm)

QUESTIONS: dict[str, tuple[str, ...]] = {
    "sex": (
        "What is the sex of this participant: {options}?",
        "Is this scan from a male or a female participant?",
        "Answer with {options}: what is the participant's sex?",
        "Which sex does this brain scan belong to, {options}?",
        "Based on this resting-state scan, is the participant {options}?",
        "Classify the participant's sex ({options}).",
        "From the connectivity in this scan, what is the subject's sex?",
        "Would you say this scan comes from a male or a female subject?",
        "Determine the biological sex of this participant: {options}.",
        "Sex of the participant ({options})?",
        "Is the person scanned here {options}?",
        "Looking at this fMRI recording, which sex is the participant?",
        "Predict the participant's sex from the scan: {options}.",
        "Tell me the participant's sex, {options}.",
        "What sex was recorded for this participant?",
        "Infer the sex of the scanned individual ({options}).",
        "Is this resting-state fMRI from a man or a woman?",
        "Choose {options} for the participant in this scan.",
        "Which is more likely for this subject's sex: {options}?",
        "Given this brain activity, state the participant's sex.",
        "Please identify whether the participant is {options}.",
        "The scan above belongs to a participant of which sex?",
    ),
    "diagnosis": (
        "Is this participant {options}?",
        "Does this scan come from a participant with {condition}? Answer {options}.",
        "Classify this participant as {options}.",
        "Based on this resting-state scan, which group does the participant belong to: {options}?",
        "What is the diagnostic group of this participant ({options})?",
        "Does the connectivity in this scan indicate {condition}? Answer {options}.",
        "Which diagnosis fits this scan best: {options}?",
        "Is this scan from a control participant or from one with {condition}?",
        "Assign this subject to a group: {options}.",
        "From this fMRI recording, is the participant {options}?",
        "Determine the clinical group of this participant ({options}).",
        "Predict the diagnosis for this scan: {options}.",
        "Tell me the participant's group, {options}.",
        "Would you label this participant {options}?",
        "Diagnostic status of the participant ({options})?",
        "Given this brain activity, is {condition} present? Answer {options}.",
        "Decide between {options} for the participant in this scan.",
        "Which is more likely for this subject: {options}?",
        "What group was this participant recruited into, {options}?",
        "Please state whether the participant is {options}.",
        "Does this resting-state pattern belong to a participant who is {options}?",
        "Screen this scan for {condition}: {options}?",
    ),
    "cohort": (
        "Which cohort does this scan come from: {options}?",
        "Was this scan acquired in the {options} study?",
        "Identify the data set of this scan ({options}).",
        "From which cohort is this resting-state recording, {options}?",
        "Classify the source cohort of this scan: {options}.",
        "Which study collected this fMRI scan ({options})?",
        "Is this recording part of {options}?",
        "Name the cohort of this participant: {options}.",
        "Tell me which data set this scan belongs to, {options}.",
        "Determine whether this scan is from {options}.",
        "Where does this resting-state scan come from: {options}?",
        "Assign this scan to its cohort ({options}).",
        "Predict the cohort of this fMRI recording: {options}.",
        "Which acquisition cohort fits this scan best, {options}?",
        "Is this participant from {options}?",
        "Which of the cohorts {options} recorded this scan?",
        "Source cohort of this scan ({options})?",
        "Decide between {options} as the origin of this scan.",
        "Please state the cohort this recording belongs to: {options}.",
        "What data set was this brain scan taken from, {options}?",
        "Which collection does this scan belong to ({options})?",
    ),
    "network_pair": (
        "Is the coupling between the {a} and {b} networks {options} compared with the cohort?",
        "How does the {a}-{b} connectivity compare with the cohort: {options}?",
        "Relative to the cohort, is connectivity between {a} and {b} regions {options}?",
        "Rate the functional coupling of the {a} and {b} networks against the cohort ({options}).",
        "Compared with the reference cohort, is {a}-{b} coupling {options}?",
        "Is the connectivity between the {a} and the {b} network {options} than usual for the cohort?",
        "Classify the {a}-{b} network coupling relative to the cohort: {options}.",
        "How strongly are the {a} and {b} networks coupled, relative to the cohort ({options})?",
        "Against the cohort norm, is the {a} to {b} connectivity {options}?",
        "Judge the {a}-{b} coupling in this scan: {options} relative to the cohort?",
        "Is functional connectivity between {a} and {b} {options} in this scan, compared with the cohort?",
        "Does this scan show {options} coupling between {a} and {b} than the cohort?",
        "Compare the {a}-{b} network connectivity of this scan with the cohort ({options}).",
        "Relative to its cohort, where does the {a}-{b} coupling lie: {options}?",
        "Is the {a}/{b} between-network connectivity {options} with respect to the cohort?",
        "Tell me whether {a}-{b} coupling is {options} than the cohort's.",
        "Assess the coupling of {a} and {b} regions against the cohort: {options}.",
        "With the cohort as reference, is {a}-{b} connectivity {options}?",
        "What is the level of {a}-{b} functional coupling relative to the cohort ({options})?",
        "Please rate {a}-{b} connectivity for this scan as {options} relative to the cohort.",
        "For this scan, is the {a}-{b} network correlation {options} than in the cohort?",
    ),
    "score": (
        "Is this participant's {score} {options} relative to the cohort?",
        "Relative to the cohort, where does the participant's {score} fall: {options}?",
        "Estimate the participant's {score} as {options} compared with the cohort.",
        "Compared with others in the cohort, is the {score} {options}?",
        "Rate this participant's {score} ({options} than the cohort).",
        "From this scan, is the {score} {options} relative to the cohort?",
        "Predict the {score} of this participant: {options}.",
        "Would you place this participant's {score} as {options} in the cohort?",
        "Is the {score} of this subject {options} relative to the other participants?",
        "Classify the participant's {score} into {options}.",
        "Where in the cohort's range does this participant's {score} lie: {options}?",
        "Tell me whether the {score} is {options} for this participant.",
        "Based on this resting-state scan, is the {score} {options}?",
        "Judge the participant's {score} against the cohort ({options}).",
        "Give the {score} band of this participant: {options}.",
        "Is this subject's {score} {options} compared with the rest of the cohort?",
        "How does the participant's {score} compare with the cohort: {options}?",
        "Assign the participant's {score} to {options}.",
        "What is the participant's {score} relative to the cohort ({options})?",
        "Please state whether this participant's {score} is {options}.",
        "For this scan, is the participant's {score} {options} than typical for the cohort?",
    ),
    "dynamics": (
        "Are the signal dynamics of this scan {options}?",
        "Is the slow fluctuation of this participant's BOLD signal {options}?",
        "Classify the temporal dynamics of this scan as {options}.",
        "Based on this resting-state scan, are the dynamics {options}?",
        "How would you describe this participant's signal dynamics: {options}?",
        "Are {condition} present in this scan? Answer {options}.",
        "Judge the temporal dynamics of this recording ({options}).",
        "Does this scan show {condition}? Answer {options}.",
        "Are this participant's BOLD time courses {options} in their dynamics?",
        "Tell me whether this scan's dynamics are {options}.",
        "Which fits the dynamics of this scan better: {options}?",
        "From this fMRI recording, are the signal dynamics {options}?",
        "Rate how slow this participant's signal is: {options}.",
        "Would you call the dynamics of this scan {options}?",
        "Decide between {options} for the dynamics of this scan.",
        "Assign this scan's temporal dynamics to {options}.",
        "Given this brain activity, are its dynamics {options}?",
        "Is the autocorrelation of this participant's signal {options}?",
        "Please state whether the signal dynamics here are {options}.",
        "What best describes the time-course dynamics of this scan, {options}?",
    ),
    "age_band": (
        "In which age band is this participant: {options}?",
        "How old is the participant ({options})?",
        "Which age range fits this scan best: {options}?",
        "Estimate the participant's age band from this scan ({options}).",
        "Based on this resting-state scan, what is the age range: {options}?",
        "Classify the participant's age into {options}.",
        "What age group does this participant belong to, {options}?",
        "Predict the age band of the participant: {options}.",
        "Tell me the participant's age range ({options}).",
        "Which of {options} is the participant's age band?",
        "Assign this participant to an age band: {options}.",
        "From this fMRI recording, how old is the subject ({options})?",
        "Age band of the participant ({options})?",
        "Would you place this participant in the age band {options}?",
        "Determine the age range of the scanned individual: {options}.",
        "Given this brain activity, which age band is most likely ({options})?",
        "Please state the participant's age band, {options}.",
        "What is the age range of this subject: {options}?",
        "Choose the participant's age band among {options}.",
        "Judge the participant's age from the scan ({options}).",
        "Which age bracket does this scan come from, {options}?",
    ),
}
"""Paraphrase pools of the single and multi paradigms, by question family (`Task.question`)."""

DESCRIBE_REQUESTS: tuple[str, ...] = (
    "Describe {topic} for this scan.",
    "Give a short description of {topic}.",
    "Summarise what this scan says about {topic}.",
    "Write one sentence about {topic}.",
    "What can you tell about {topic} from this scan?",
    "Explain {topic} in one sentence.",
    "Report {topic} for this participant.",
    "Provide a brief statement on {topic}.",
    "Characterise {topic} based on this resting-state scan.",
    "Comment on {topic}.",
    "In a sentence, describe {topic}.",
    "State your reading of {topic}.",
    "Describe this scan with respect to {topic}.",
    "Offer a one-line summary of {topic}.",
    "From this fMRI recording, describe {topic}.",
    "Tell me about {topic}.",
    "Give your assessment of {topic}.",
    "Summarise {topic} in plain words.",
    "What does this recording suggest about {topic}?",
    "Please describe {topic}.",
    "Briefly characterise {topic} for this subject.",
)
"""Paraphrase pool of the open-ended paradigm (any task, through its `topic` field)."""

STATEMENTS: dict[str, str] = {
    "sex": " The participant is{label}.",
    "diagnosis": " The participant belongs to the{label} group.",
    "cohort": " This scan comes from the{label} cohort.",
    "network_pair": " Coupling between the {a} and {b} networks is{label} relative to the cohort.",
    "score": " The participant's {score} is{label} relative to the cohort.",
    "age_band": " The participant's age band is{label}.",
    "dynamics": " The signal dynamics of this scan are{label}.",
}
"""The open-ended answer of each question family; `{label}` is the label word (leading space included)."""

COHORT_LINE = "Cohort: {dataset}.\n"


def question_text(
    task: Task, rng: np.random.Generator, fields: Mapping[str, str] | None = None, paradigm: str = "single"
) -> str:
    """A seeded paraphrase of `task`'s question (of its first `task.paraphrases`), or of the
    open-ended request, fields filled in."""
    pool = DESCRIBE_REQUESTS if _checked_paradigm(paradigm) == "open" else QUESTIONS[task.question][: task.paraphrases]
    return _format(pool[int(rng.integers(len(pool)))], task, fields)


def _format(template: str, task: Task, fields: Mapping[str, str] | None, **extra: str) -> str:
    try:
        return template.format(**task.format_fields(fields), **extra)
    except KeyError as error:
        raise FmriInputError(
            f"task {task.name!r}: the question needs the field {error.args[0]!r}; found fields {sorted(task.format_fields(fields))}"
        ) from None


def answer_text(task: Task, label: int, paradigm: str = "single", fields: Mapping[str, str] | None = None) -> str:
    """The answer continuation of class/bin `label`: the label word, or (open-ended) the statement."""
    word = task.label_words[label]
    if _checked_paradigm(paradigm) != "open":
        return word
    return _format(STATEMENTS[task.question], task, fields, label=word)


def answer_texts(task: Task, paradigm: str = "single", fields: Mapping[str, str] | None = None) -> list[str]:
    """Every class's answer continuation, in class order (what scoring compares)."""
    return [answer_text(task, label, paradigm, fields) for label in range(task.n_classes)]


def check_distinguishable(tasks: Sequence[Task]) -> None:
    """Refuse two tasks that ask a question in the same words with the same label words.

    Trained together, such tasks put two independent labels on one prompt (the model is taught each
    task's answer and its opposite), and at evaluation nothing in the prompt says which task is asked.

    Raises:
        FmriInputError: naming both tasks and one question they share.
    """
    asked: dict[tuple[tuple[str, ...], str], str] = {}
    for task in tasks:
        for template in QUESTIONS[task.question]:
            question = _format(template, task, None)
            other = asked.setdefault((task.label_words, question), task.name)
            if other != task.name:
                raise FmriInputError(
                    f"tasks {other!r} and {task.name!r}: both answer {question!r} with {task.options}; the model cannot "
                    "tell them apart. Give one of them its own question family or label words"
                )


def _checked_paradigm(paradigm: str) -> str:
    if paradigm not in PARADIGMS:
        raise FmriInputError(f"paradigm: expected one of {PARADIGMS}, found {paradigm!r}")
    return paradigm


@dataclass
class ScanBlock:
    """One scan's part of a prompt: its `<fmri>` marker, cohort line, description and question turns.

    `turns` are `(question, answer)` pairs; only the last turn of the query block has `answer=None`
    (the answer the model is asked for).
    """

    turns: list[tuple[str, str | None]]
    cohort_line: str = ""
    description: str = ""

    def text(self) -> str:
        parts = [f"{FMRI_START_TOKEN}\n{self.cohort_line}{self.description}"]
        for question, answer in self.turns:
            parts.append(f"### Question: {question}\n### Answer:")
            if answer is not None:
                parts.append(f"{answer}\n")
        return "".join(parts)

    def messages(self) -> list[dict[str, Any]]:
        """The block as chat turns; the scan is a `{"type": "fmri"}` part of the first user turn."""
        messages: list[dict[str, Any]] = []
        for i, (question, answer) in enumerate(self.turns):
            content: list[dict[str, str]] = [{"type": "fmri"}] if i == 0 else []
            prefix = f"\n{self.cohort_line}{self.description}" if i == 0 else ""
            content.append({"type": "text", "text": prefix + question})
            messages.append({"role": "user", "content": content})
            if answer is not None:
                messages.append({"role": "assistant", "content": [{"type": "text", "text": answer.strip()}]})
        return messages


@dataclass
class Prompt:
    """A k-shot prompt: answered blocks of other subjects, then the query block, one scan each.

    `scans` lists the scan of every block in order (shots first): what fills the `<fmri>` markers.
    """

    shots: list[ScanBlock]
    query: ScanBlock
    scans: list[Any] = field(default_factory=list)

    def text(self, processor: Any = None, chat_template: bool = False) -> str:
        """The prompt as text with one `<fmri>` marker per scan (the paper's layout, or the
        processor's chat template when `chat_template`), ending where the answer begins."""
        blocks = [*self.shots, self.query]
        if not chat_template:
            return "".join(block.text() for block in blocks)
        if processor is None:
            raise FmriInputError("chat_template: rendering with the chat template needs the processor")
        conversation = [message for block in blocks for message in block.messages()]
        return processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)


def code_token_offset(processor: Any) -> int:
    """Token id of `<fmri_00000>` in the processor's text tokenizer (code c has id offset + c)."""
    return int(processor.tokenizer.convert_tokens_to_ids(fmri_code_tokens(1)[0]))


def render_token_ids(prompt: str, codes: Sequence[Sequence[int]], processor: Any) -> list[int]:
    """Token ids of `prompt` with each `<fmri>` marker filled by a scan's pre-computed codes.

    What `processor(text=prompt, fmri=scans)` followed by the model's placeholder filling
    (`FmriLMForCausalLM.insert_fmri_tokens`) gives for the same scans, without reading them again:
    each marker expands to `<fmri>` + N × `<fmri_pad>` + `</fmri>` exactly as the processor expands
    it and is tokenized by the same tokenizer, then the placeholders get `code + id(<fmri_00000>)`.

    Args:
        prompt: text with one `<fmri>` marker per scan.
        codes: per marker, in order, the scan's codes (raw code indices, `windows_per_scan`
            windows × tokens per window, as `FmriTokenizerModel.encode` gives them, flattened).
        processor: the model's [`FmriProcessor`].

    Raises:
        FmriInputError: the number of markers and of code lists differ, or a code list is not
            `processor.placeholders_per_scan` long (both counts named).
    """
    n_markers = prompt.count(FMRI_START_TOKEN)
    if n_markers != len(codes):
        raise FmriInputError(
            f"codes: found {n_markers} {FMRI_START_TOKEN} marker(s) in the prompt and {len(codes)} code list(s); expected one per marker"
        )
    expected = processor.placeholders_per_scan
    for i, scan_codes in enumerate(codes):
        if len(scan_codes) != expected:
            raise FmriInputError(
                f"codes[{i}]: expected {expected} codes (tokens per window x windows per scan), found {len(scan_codes)}"
            )
    ids = np.asarray(processor.tokenizer(processor.expand_fmri_markers(prompt))["input_ids"], dtype=np.int64)
    placeholders = ids == processor.fmri_pad_token_id
    flat = np.concatenate([np.asarray(c, dtype=np.int64) for c in codes]) if codes else np.empty(0, dtype=np.int64)
    if placeholders.sum() != flat.size:
        raise FmriInputError(
            f"prompt: {int(placeholders.sum())} placeholders after tokenization for {flat.size} codes; the text must not contain fMRI tokens itself"
        )
    ids[placeholders] = flat + code_token_offset(processor)
    return ids.tolist()


__all__ = [
    "COHORT_LINE",
    "DESCRIBE_REQUESTS",
    "PARADIGMS",
    "QUESTIONS",
    "STATEMENTS",
    "Paradigm",
    "Prompt",
    "ScanBlock",
    "answer_text",
    "answer_texts",
    "check_distinguishable",
    "code_token_offset",
    "question_text",
    "render_token_ids",
]
