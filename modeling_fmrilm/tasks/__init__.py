"""Stage 3 tasks and their evaluation: what is asked about a scan, how it is answered and scored.

One concept per module:

- `registry`: [`Task`] (name, label column, label words, question family), the registered tasks,
  [`ScoreBins`] (regression bins fitted on training subjects);
- `prompts`: paraphrase pools (>= 20 per family), the three paradigms, k-shot prompts, prompts
  rendered into token ids with pre-computed codes ([`render_token_ids`]);
- `labels`: label sources (BIDS `participants.tsv`, nilearn's ABIDE-PCP and ADHD-200 layouts,
  the HCP behavioural CSV, any subject CSV) in one canonical [`LabelTable`], joined to scans with
  every left-out subject named;
- `synthetic`: a synthetic cohort with known group and continuous effects on the embedded data's
  connectivity structure;
- `data`: [`TaskData`] builders (label tables, the embedded cohort task, descriptor questions,
  the synthetic tasks);
- `evaluation_splits`: the evaluation's stratified subject/family splits, the pipeline's fixed split (`modeling_fmrilm.splits`), label-balanced shots;
- `baselines`: majority/mean, the Brainmarks FC protocol, tangent-space FC;
- `scoring`: label-word log-likelihoods, constrained generation and pooled hidden states of an
  `FmriLMForCausalLM`;
- `metrics`: scikit-learn metrics and their summary over seeds;
- `sources`: [`TaskSources`], the task flags `fmrilm evaluate`, Stage 3 and the bench share, and
  [`build_tasks`];
- `settings`: what an evaluation runs ([`EvaluationSettings`]) and the flags of `fmrilm evaluate`;
- `predictions`: the prompts of one task on one split and the model's answer probabilities;
- `report`: the table ([`Row`], [`EvaluationReport`]: markdown + JSON) and `merge_reports`;
- `evaluate`: the engine; `run_evaluation` is `fmrilm evaluate`.
"""

from .data import (
    TaskData,
    cohort_task_data,
    descriptor_task_data,
    most_varied,
    synthetic_task_data,
    task_data_from_table,
)
from .evaluate import evaluate, run_evaluation
from .labels import (
    ColumnSpec,
    LabelReport,
    LabelTable,
    load_table_scans,
    read_abide_pcp,
    read_adhd200,
    read_hcp_behavioral,
    read_participants_tsv,
    read_pcp_timeseries,
    read_subject_csv,
    task_targets,
)
from .predictions import build_prompts
from .prompts import PARADIGMS, Prompt, ScanBlock, answer_text, answer_texts, question_text, render_token_ids
from .registry import BIN_WORDS, TASKS, ScoreBins, Task, get_task, label_vocabulary, register_task
from .report import EvaluationReport
from .scoring import LabelScorer
from .settings import EvaluationArguments, EvaluationSettings
from .sources import TaskSources, build_tasks
from .synthetic import SyntheticCohort, SyntheticSettings, make_synthetic_cohort

__all__ = [
    "BIN_WORDS",
    "PARADIGMS",
    "TASKS",
    "ColumnSpec",
    "EvaluationArguments",
    "EvaluationReport",
    "EvaluationSettings",
    "LabelReport",
    "LabelScorer",
    "LabelTable",
    "Prompt",
    "ScanBlock",
    "ScoreBins",
    "SyntheticCohort",
    "SyntheticSettings",
    "Task",
    "TaskData",
    "TaskSources",
    "answer_text",
    "answer_texts",
    "build_prompts",
    "build_tasks",
    "cohort_task_data",
    "descriptor_task_data",
    "evaluate",
    "get_task",
    "label_vocabulary",
    "load_table_scans",
    "make_synthetic_cohort",
    "most_varied",
    "question_text",
    "read_abide_pcp",
    "read_adhd200",
    "read_hcp_behavioral",
    "read_participants_tsv",
    "read_pcp_timeseries",
    "read_subject_csv",
    "register_task",
    "render_token_ids",
    "run_evaluation",
    "synthetic_task_data",
    "task_data_from_table",
    "task_targets",
]
