"""Label sources: phenotype tables read into one canonical [`LabelTable`], joined to scans by subject.

Readers, each for the layout its source writes on disk (no network):

- [`read_participants_tsv`]: a BIDS `participants.tsv` (`participant_id` = `sub-<label>`, `n/a`
  for missing values); subjects are matched without the `sub-` prefix, as the BIDS readers of
  `modeling_fmrilm.io` name them.
- [`read_abide_pcp`]: what `nilearn.datasets.fetch_abide_pcp` saves: `ABIDE_pcp/
  Phenotypic_V1_0b_preprocessed1.csv` (`SUB_ID`, `FILE_ID`, `SITE_ID`, `DX_GROUP` 1 autism /
  2 control, `SEX` 1 male / 2 female, `AGE_AT_SCAN`; -9999 codes a missing value) and the ROI time
  series `ABIDE_pcp/<pipeline>/<strategy>/<FILE_ID>_<derivative>.1D` (time rows, ROI columns, a
  `#` header line); `FILE_ID == "no_filename"` means no scan.
- [`read_adhd200`]: what `nilearn.datasets.fetch_adhd` saves: `adhd/
  ADHD200_40subs_motion_parameters_and_phenotypics.csv` (`Subject` as an integer, zero-padded to 7
  digits as the fetcher does; `adhd` 0 control / 1 ADHD; `sex`; `age`; `site`) and the 4-D images
  `adhd/data/<id>/<id>_rest_tshift_RPI_voreg_mni.nii.gz` (parcellate them with
  `modeling_fmrilm.io.read_nifti` and an atlas).
- [`read_hcp_behavioral`]: the HCP unrestricted behavioural CSV (`Subject`, `Gender` M/F, `Age` as
  the released band `22-25`/`26-30`/`31-35`/`36+`, `CogFluidComp_Unadj`); a family column
  (`Family_ID`, restricted data) when given.
- [`read_subject_csv`]: any CSV/TSV with a subject column and the columns you name.

Canonical columns: `sex` (`male`/`female`), `diagnosis` (`control`, `adhd`, `autism`, `cn`, `ad`,
…), `age`, `age_band`, `fluid_intelligence`, `site`, anything a [`ColumnSpec`] names. A source
value with no canonical mapping is kept as written, so the task that reads it reports it as an
unknown value (subject and value named). [`task_targets`] joins a table to scans and reports, by
name, every missing label, unknown value, scan without a label row and listed subject without a
scan: an error by default, or (``strict=False``) a warning and a [`LabelReport`] kept with the
results. Nothing is dropped silently.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FmriInputError
from ..feature_extraction_fmrilm import validate_fmri
from ..io import FmriScan
from .registry import Task

MISSING_STRINGS = frozenset({"", "n/a", "na", "nan", "none", "null"})
"""Cells read as a missing value (BIDS writes `n/a`)."""

SEX_CODES = {"m": "male", "male": "male", "f": "female", "female": "female"}
ABIDE_CSV = "Phenotypic_V1_0b_preprocessed1.csv"
ABIDE_MISSING = -9999.0
ADHD_CSV = "ADHD200_40subs_motion_parameters_and_phenotypics.csv"
ADHD_FUNC = "data/{id}/{id}_rest_tshift_RPI_voreg_mni.nii.gz"


@dataclass(frozen=True)
class ColumnSpec:
    """How one canonical column is read from a source column.

    Attributes:
        source: the column's name in the file.
        codes: source value (compared lower-cased, stripped) -> canonical value; a value not in
            it is kept as written (and reported as unknown by the task). `None` keeps every value.
        numeric: parse as a float (a cell that does not parse is kept as written, and reported).
        missing: further source values that mean "missing" (e.g. ABIDE's -9999).
    """

    source: str
    codes: Mapping[str, str] | None = None
    numeric: bool = False
    missing: tuple[float, ...] = ()

    def read(self, cell: Any) -> str | float | None:
        """The canonical value of one cell, `None` when missing."""
        if cell is None or (isinstance(cell, float) and np.isnan(cell)):
            return None
        text = str(cell).strip()
        if text.lower() in MISSING_STRINGS:
            return None
        if self.numeric:
            try:
                number = float(text)
            except ValueError:
                return text
            return None if number in self.missing or not np.isfinite(number) else number
        if self.codes is None:
            return text
        key = _number_text(text).lower()
        return self.codes.get(key, text)


def _number_text(text: str) -> str:
    """`"1.0"` -> `"1"` (codes read by pandas as floats), other text unchanged."""
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


@dataclass
class LabelTable:
    """Phenotypes of one data set in canonical columns, one row per subject.

    Attributes:
        source: the file(s) read (named in every report).
        dataset: data set name.
        subjects: subject ids as the scans name them.
        columns: canonical column -> one value per subject (`None` = missing).
        scan_files: subject -> time-series file, for sources whose layout names one.
        no_scan: subjects the source lists without a scan (e.g. ABIDE `FILE_ID == "no_filename"`).
        families: subject -> family id, when the source has a family column (splits keep families together).
    """

    source: str
    dataset: str
    subjects: list[str]
    columns: dict[str, list[Any]]
    scan_files: dict[str, Path] = field(default_factory=dict)
    no_scan: list[str] = field(default_factory=list)
    families: dict[str, str] | None = None

    def __post_init__(self) -> None:
        duplicates = sorted({s for s in self.subjects if self.subjects.count(s) > 1})
        if duplicates:
            raise FmriInputError(f"{self.source}: expected one row per subject, found several for {duplicates[:10]}")
        for name, values in self.columns.items():
            if len(values) != len(self.subjects):
                raise FmriInputError(
                    f"{self.source}: column {name!r} has {len(values)} values for {len(self.subjects)} subjects"
                )

    def values(self, column: str) -> dict[str, Any]:
        """subject -> value of a canonical column.

        Raises:
            FmriInputError: the table has no such column (its columns are listed).
        """
        if column not in self.columns:
            raise FmriInputError(f"{self.source}: expected a {column!r} column, found {sorted(self.columns)}")
        return dict(zip(self.subjects, self.columns[column], strict=True))


def _read_frame(path: Path, sep: str | None = None) -> Any:
    import pandas as pd

    if not path.is_file():
        raise FmriInputError(f"{path}: expected a phenotype table, found no such file")
    sep = sep or ("\t" if path.suffix.lower() == ".tsv" else ",")
    try:
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError) as error:
        raise FmriInputError(
            f"{path}: expected a {'TSV' if sep == chr(9) else 'CSV'} table, could not parse it ({error})"
        ) from None


def _require(frame: Any, names: Sequence[str], path: Path) -> None:
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise FmriInputError(f"{path}: expected columns {missing}, found {list(frame.columns)}")


def _table(
    frame: Any, path: Path, dataset: str, subjects: list[str], specs: Mapping[str, ColumnSpec], **extra: Any
) -> LabelTable:
    present = {name: spec for name, spec in specs.items() if spec.source in frame.columns}
    columns = {name: [spec.read(cell) for cell in frame[spec.source].tolist()] for name, spec in present.items()}
    return LabelTable(str(path), dataset, subjects, columns, **extra)


def read_subject_csv(
    path: str | Path,
    subject_column: str,
    columns: Mapping[str, ColumnSpec | str],
    dataset: str | None = None,
    family_column: str | None = None,
    scan_column: str | None = None,
    sep: str | None = None,
) -> LabelTable:
    """Any table with a subject column.

    Args:
        path: a `.csv` (comma) or `.tsv` (tab) file; `sep` overrides.
        subject_column: the column of subject ids (matched against the scans' `subject`).
        columns: canonical name -> [`ColumnSpec`], or -> a source column name read as text.
        dataset: data set name (default: the file's stem).
        family_column: family ids (splits then keep families together).
        scan_column: time-series file of each subject, relative to the table's folder; an empty
            cell means no scan.

    Raises:
        FmriInputError: no such file, a named column absent, or a subject listed twice.
    """
    path = Path(path)
    frame = _read_frame(path, sep)
    specs = {name: ColumnSpec(spec) if isinstance(spec, str) else spec for name, spec in columns.items()}
    _require(
        frame,
        [subject_column, *(s.source for s in specs.values()), *(c for c in (family_column, scan_column) if c)],
        path,
    )
    subjects = [s.strip() for s in frame[subject_column].tolist()]
    scan_files: dict[str, Path] = {}
    no_scan: list[str] = []
    if scan_column:
        for subject, cell in zip(subjects, frame[scan_column].tolist(), strict=True):
            if cell.strip().lower() in MISSING_STRINGS:
                no_scan.append(subject)
            else:
                scan_files[subject] = path.parent / cell.strip()
    families = (
        dict(zip(subjects, (f.strip() for f in frame[family_column].tolist()), strict=True)) if family_column else None
    )
    return _table(
        frame, path, dataset or path.stem, subjects, specs, scan_files=scan_files, no_scan=no_scan, families=families
    )


def read_participants_tsv(
    path: str | Path, columns: Mapping[str, ColumnSpec | str] | None = None, dataset: str | None = None
) -> LabelTable:
    """A BIDS `participants.tsv` (or the BIDS root holding one).

    Args:
        columns: canonical name -> spec; default: `sex` (from `sex`, M/F/male/female) and `age`
            (numeric), each when present.
        dataset: default: the BIDS root folder's name.

    Subjects are the `participant_id` labels without `sub-` (as `modeling_fmrilm.io` names BIDS scans).
    """
    path = Path(path)
    path = path / "participants.tsv" if path.is_dir() else path
    frame = _read_frame(path, "\t")
    _require(frame, ["participant_id"], path)
    specs = (
        {"sex": ColumnSpec("sex", SEX_CODES), "age": ColumnSpec("age", numeric=True)}
        if columns is None
        else {name: ColumnSpec(spec) if isinstance(spec, str) else spec for name, spec in columns.items()}
    )
    if columns is not None:
        _require(frame, [spec.source for spec in specs.values()], path)
    subjects = [s.strip().removeprefix("sub-") for s in frame["participant_id"].tolist()]
    return _table(frame, path, dataset or path.parent.name, subjects, specs)


def _pcp_strategy(band_pass_filtering: bool, global_signal_regression: bool) -> str:
    """nilearn's folder name of a PCP preprocessing strategy: `filt_global`, `nofilt_noglobal`, …"""
    return f"{'' if band_pass_filtering else 'no'}filt_{'' if global_signal_regression else 'no'}global"


def read_abide_pcp(
    data_dir: str | Path,
    pipeline: str = "cpac",
    band_pass_filtering: bool = False,
    global_signal_regression: bool = False,
    derivative: str = "rois_cc200",
) -> LabelTable:
    """ABIDE (PCP) as `nilearn.datasets.fetch_abide_pcp` leaves it on disk.

    Args:
        data_dir: the fetcher's `data_dir` (holding `ABIDE_pcp/`) or the `ABIDE_pcp` folder itself.
        pipeline, band_pass_filtering, global_signal_regression: as for the fetcher (they name the
            folder `ABIDE_pcp/<pipeline>/<strategy>/`).
        derivative: the ROI time series (`rois_cc200`, `rois_aal`, `rois_ho`, …).

    Returns:
        Columns `diagnosis` (autism/control), `sex`, `age`, `site`; `scan_files` maps each
        subject (`SUB_ID`) to `<FILE_ID>_<derivative>.1D`; a subject whose `FILE_ID` is
        `no_filename` or whose file is absent is in `no_scan`. Read the files with [`read_pcp_timeseries`].
    """
    root = Path(data_dir)
    root = root if root.name == "ABIDE_pcp" else root / "ABIDE_pcp"
    path = root / ABIDE_CSV
    frame = _read_frame(path)
    _require(frame, ["SUB_ID", "FILE_ID"], path)
    subjects = [_number_text(s.strip()) for s in frame["SUB_ID"].tolist()]
    folder = root / pipeline / _pcp_strategy(band_pass_filtering, global_signal_regression)
    scan_files, no_scan = {}, []
    for subject, file_id in zip(subjects, frame["FILE_ID"].tolist(), strict=True):
        candidate = folder / f"{file_id.strip()}_{derivative}.1D"
        if file_id.strip() in ("", "no_filename") or not candidate.is_file():
            no_scan.append(subject)
        else:
            scan_files[subject] = candidate
    specs = {
        "diagnosis": ColumnSpec("DX_GROUP", {"1": "autism", "2": "control"}),
        "sex": ColumnSpec("SEX", {"1": "male", "2": "female"}),
        "age": ColumnSpec("AGE_AT_SCAN", numeric=True, missing=(ABIDE_MISSING,)),
        "site": ColumnSpec("SITE_ID"),
    }
    return _table(frame, path, "abide", subjects, specs, scan_files=scan_files, no_scan=no_scan)


def read_pcp_timeseries(
    path: str | Path, tr: float, subject: str, dataset: str = "abide", atlas: str = "unknown"
) -> FmriScan:
    """One PCP `.1D` ROI time-series file (time rows, ROI columns, `#` header) as a ROI-major scan.

    Raises:
        FmriInputError: the file cannot be parsed, or holds NaN/inf or constant ROIs (named).
    """
    path = Path(path)
    try:
        series = np.loadtxt(path, ndmin=2, dtype=np.float64)
    except (OSError, ValueError) as error:
        raise FmriInputError(
            f"{path}: expected a whitespace-separated .1D table of time rows and ROI columns ({error})"
        ) from None
    data = validate_fmri(series.T, name=str(path))
    return FmriScan(data=data, tr=float(tr), subject=subject, dataset=dataset, atlas=atlas, source=str(path))


def read_adhd200(data_dir: str | Path) -> LabelTable:
    """ADHD-200 (nilearn's 40-subject release) as `nilearn.datasets.fetch_adhd` leaves it on disk.

    Args:
        data_dir: the fetcher's `data_dir` (holding `adhd/`) or the `adhd` folder itself.

    Returns:
        Columns `diagnosis` (`adhd` 0 control / 1 ADHD), `sex` (ADHD-200 codes 0 female / 1 male,
        or M/F), `age`, `site`; subjects as 7-digit ids; `scan_files` maps each to its 4-D image
        (absent images are in `no_scan`); parcellate with `modeling_fmrilm.io.read_nifti`.
    """
    root = Path(data_dir)
    root = root if root.name == "adhd" else root / "adhd"
    path = root / ADHD_CSV
    frame = _read_frame(path)
    _require(frame, ["Subject"], path)
    subjects = []
    for cell in frame["Subject"].tolist():
        text = _number_text(cell.strip())
        subjects.append(f"{int(text):07d}" if text.isdigit() else text)
    scan_files, no_scan = {}, []
    for subject in subjects:
        image = root / ADHD_FUNC.format(id=subject)
        if image.is_file():
            scan_files[subject] = image
        else:
            no_scan.append(subject)
    specs = {
        "diagnosis": ColumnSpec("adhd", {"0": "control", "1": "adhd"}),
        "sex": ColumnSpec("sex", {"0": "female", "1": "male", **SEX_CODES}),
        "age": ColumnSpec("age", numeric=True),
        "site": ColumnSpec("site"),
    }
    return _table(frame, path, "adhd200", subjects, specs, scan_files=scan_files, no_scan=no_scan)


def read_hcp_behavioral(path: str | Path, family_csv: str | Path | None = None) -> LabelTable:
    """The HCP unrestricted behavioural CSV: `sex` (`Gender`), `age_band` (`Age`),
    `fluid_intelligence` (`CogFluidComp_Unadj`).

    Args:
        family_csv: the restricted CSV (`Subject`, `Family_ID`), when available: splits then keep
            families (twins, siblings) on one side.
    """
    path = Path(path)
    frame = _read_frame(path)
    _require(frame, ["Subject"], path)
    subjects = [_number_text(s.strip()) for s in frame["Subject"].tolist()]
    specs = {
        "sex": ColumnSpec("Gender", SEX_CODES),
        "age_band": ColumnSpec("Age"),
        "fluid_intelligence": ColumnSpec("CogFluidComp_Unadj", numeric=True),
    }
    families = None
    if family_csv is not None:
        family_table = read_subject_csv(family_csv, "Subject", {}, family_column="Family_ID")
        families = {_number_text(s): f for s, f in (family_table.families or {}).items()}
    return _table(frame, path, "hcp", subjects, specs, families=families)


@dataclass
class LabelReport:
    """What joining a label table to scans found for one task: every subject left out, by name."""

    task: str
    source: str
    missing_label: list[str] = field(default_factory=list)
    unknown_value: list[tuple[str, str]] = field(default_factory=list)
    no_label_row: list[str] = field(default_factory=list)
    no_scan: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing_label or self.unknown_value or self.no_label_row or self.no_scan)

    def message(self) -> str:
        parts = []
        if self.missing_label:
            parts.append(f"missing label for {len(self.missing_label)} subject(s): {self.missing_label[:20]}")
        if self.unknown_value:
            parts.append(f"unknown label value for {len(self.unknown_value)} subject(s): {self.unknown_value[:20]}")
        if self.no_label_row:
            parts.append(f"no label row for {len(self.no_label_row)} scanned subject(s): {self.no_label_row[:20]}")
        if self.no_scan:
            parts.append(f"no scan for {len(self.no_scan)} labelled subject(s): {self.no_scan[:20]}")
        return f"task {self.task!r} on {self.source}: " + "; ".join(parts or ["every subject labelled and scanned"])

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "source": self.source,
            "missing_label": self.missing_label,
            "unknown_value": [list(pair) for pair in self.unknown_value],
            "no_label_row": self.no_label_row,
            "no_scan": self.no_scan,
        }


def task_targets(
    task: Task, table: LabelTable, scan_subjects: Sequence[str], strict: bool = True
) -> tuple[np.ndarray, np.ndarray, LabelReport]:
    """Targets of `task` for the scans whose subjects are `scan_subjects`.

    Args:
        scan_subjects: the subject of each scan (in the table's naming).
        strict: raise when a scan cannot be labelled (default); else warn and leave it out.

    Returns:
        `(kept, targets, report)`: indices into `scan_subjects` that have a valid label, their
        targets (class indices or floats), and the report of everything left out. Labelled
        subjects with no scan (in `table.no_scan`, or absent from `scan_subjects`) cannot be
        evaluated; they are always named in the report and in a warning, never an error (a table
        usually lists more subjects than were scanned or kept).

    Raises:
        FmriInputError: (`strict`) a scan whose subject has no label row, a missing label or an
            unknown label value, every one named.
    """
    if task.column is None:
        raise FmriInputError(
            f"task {task.name!r}: reads no label column (its targets are computed), so no label table applies"
        )
    values = table.values(task.column)
    report = LabelReport(task.name, table.source)
    kept, targets = [], []
    for index, subject in enumerate(scan_subjects):
        if subject not in values:
            report.no_label_row.append(subject)
            continue
        value = values[subject]
        if value is None:
            report.missing_label.append(subject)
            continue
        target = task.encode(value)
        if target is None:
            report.unknown_value.append((subject, str(value)))
            continue
        kept.append(index)
        targets.append(target)
    scanned = set(scan_subjects)
    report.no_scan = [s for s in table.subjects if s not in scanned and values[s] is not None]
    unusable = report.missing_label or report.unknown_value or report.no_label_row
    if unusable and strict:
        raise FmriInputError(
            report.message() + "; pass strict=False to leave these subjects out (they stay listed in the report)"
        )
    if not report.ok:
        warnings.warn(report.message() + "; these subjects are left out", stacklevel=2)
    dtype = np.float64 if task.kind == "regression" else np.int64
    return np.asarray(kept, dtype=np.int64), np.asarray(targets, dtype=dtype), report


def load_table_scans(table: LabelTable, read: Callable[[Path, str], FmriScan]) -> list[FmriScan]:
    """The scans of `table.scan_files`, read by `read(path, subject)`, in subject order.

    E.g. ABIDE: `load_table_scans(table, lambda p, s: read_pcp_timeseries(p, tr=2.0, subject=s))`;
    ADHD-200: `lambda p, s: read_nifti(p, atlas_img, subject=s, dataset="adhd200")`.
    """
    return [read(table.scan_files[subject], subject) for subject in table.subjects if subject in table.scan_files]


__all__ = [
    "ABIDE_CSV",
    "ADHD_CSV",
    "ColumnSpec",
    "LabelReport",
    "LabelTable",
    "load_table_scans",
    "read_abide_pcp",
    "read_adhd200",
    "read_hcp_behavioral",
    "read_participants_tsv",
    "read_pcp_timeseries",
    "read_subject_csv",
    "task_targets",
]
