"""`fmrilm app`: a page on this machine (127.0.0.1 only) to ask a trained fMRI-language model about a scan.

Gradio, an optional extra: `pip install "fmrilm[app]"`. Upload a scan (a 4-D NIfTI image with its
label atlas, or a parcellated .mat/.npy/.npz/.h5/.tsv/.csv), see the windows the model reads,
the functional connectivity matrix and, when the app has a descriptor corpus (`--corpus`), the
scan's descriptor text against that corpus's cohort reference; then ask questions
(`modeling_fmrilm.ask.Conversation`). A file the readers reject shows their message on the page.
Telemetry is off: Gradio's analytics and version check are disabled.

Bounded resources: uploads larger than `max_upload_mb` (`--max-upload-mb`, default
`DEFAULT_MAX_UPLOAD_MB`) are refused by Gradio's `max_file_size` and again by `AskApp.view`. A
session's uploads are deleted, and its scan and turns dropped, when its tab closes (Gradio's
unload event) or after `SESSION_TTL_S` without an update. Gradio writes into a folder of the
server's own (inside `GRADIO_TEMP_DIR`), swept of files older than `CACHE_AGE_S` every
`CACHE_SWEEP_S` (Gradio's `delete_cache`) and removed whole when the server stops. At most
`STATE_SESSIONS` sessions keep state at once. After each upload and each session the garbage
cycles are collected (the figures) and the C heap's freed pages go back to the system (glibc's
`malloc_trim`), so that plotting one scan after another does not ratchet the resident memory up.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .ask import DEFAULT_MAX_NEW_TOKENS, Conversation, load_model, read_scan
from .errors import FmriInputError, MissingTRError
from .figures import plot_fc_with_description, plot_windows

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_MAX_UPLOAD_MB = 256
SESSION_TTL_S = 3600
CACHE_SWEEP_S, CACHE_AGE_S = 600, 3600
STATE_SESSIONS = 256
NO_SCAN = "Upload a scan to begin."
TR_FIELD = "TR in seconds (0: the file's own)"
INSTALL_HINT = 'the app needs Gradio: pip install "fmrilm[app]"'


def _gradio() -> Any:
    """Gradio, imported with its telemetry off (or a clear error naming the extra to install)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError as error:
        raise FmriInputError(f"fmrilm app: {INSTALL_HINT} ({error})") from None
    return gradio


def _image(plot: Callable[[Path], Path]) -> Any:
    """The PNG that `plot(path)` writes, as a PIL image (the temporary file is removed)."""
    from PIL import Image

    with (
        tempfile.TemporaryDirectory(prefix="fmrilm-app-") as folder,
        Image.open(plot(Path(folder) / "figure.png")) as image,
    ):
        return image.copy()


def _shown(message: str, *paths: str | None) -> str:
    """`message` with upload paths (Gradio's temporary folders) shortened to the file names."""
    for path in paths:
        if path:
            message = message.replace(str(path), Path(path).name)
    return message


def _remove_uploads(paths: Iterable[str]) -> None:
    """Delete a session's uploaded files and their folders (Gradio puts each upload in a folder of its own)."""
    for path in map(Path, paths):
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty, or gone
            path.parent.rmdir()


def _return_freed_memory() -> None:
    """Collect the garbage cycles now (a matplotlib figure is one, holding its ~10 MB canvas until the
    cyclic collector runs) and give the C heap's free pages back to the system (glibc's `malloc_trim`;
    a no-op elsewhere)."""
    gc.collect()
    library = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(library), "malloc_trim", None) if library else None
    if trim is not None:
        trim(0)


@dataclass
class ScanView:
    """What the page shows of an uploaded scan."""

    scan: Any
    status: str
    windows: Any = None
    connectivity: Any = None
    description: str = ""


class AskApp:
    """The ask flow behind the page: scan upload -> figures and description -> questions and answers.

    Args:
        model, processor: from `modeling_fmrilm.ask.load_model`.
        corpus: descriptor corpus folder (with `cohort_reference.json`) to describe scans against.
        atlas: default label atlas for NIfTI uploads (the page can upload another).
        max_new_tokens: longest answer in tokens.
        chat_template: prompts through the processor's chat template.
        max_upload_mb: largest upload read, in MB (10^6 bytes).
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        corpus: str | Path | None = None,
        atlas: str | Path | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        chat_template: bool = False,
        max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    ) -> None:
        if not max_upload_mb > 0:
            raise FmriInputError(f"max_upload_mb: expected a positive size in MB, found {max_upload_mb!r}")
        self.model, self.processor = model, processor
        self.max_upload_mb = max_upload_mb
        self.reference = None
        if corpus is not None:
            from .descriptors.reference import CohortReference

            self.reference = CohortReference.load(corpus)
        self.atlas = atlas
        self.max_new_tokens = max_new_tokens
        self.chat_template = chat_template

    def view(self, scan_path: str | None, atlas_path: str | None = None, tr: float | None = None) -> ScanView:
        """Read the upload and build what the page shows; reader errors become the status line."""
        if not scan_path:
            return ScanView(None, NO_SCAN)
        extractor = self.processor.feature_extractor
        try:
            for path in filter(None, (scan_path, atlas_path)):
                if os.path.isfile(path) and os.path.getsize(path) > self.max_upload_mb * 1e6:
                    raise FmriInputError(
                        f"{path}: expected an upload of at most {self.max_upload_mb:g} MB (the app's --max-upload-mb), "
                        f"found {os.path.getsize(path) / 1e6:,.1f} MB"
                    )
            scan = read_scan(scan_path, tr=tr or None, atlas=atlas_path or self.atlas, num_rois=extractor.num_rois)
            windows = extractor([scan])["fmri_values"]
        except MissingTRError as error:
            problem = MissingTRError(error.where, f"enter it in the “{TR_FIELD}” field")
            return ScanView(None, f"**Could not read this scan.** {_shown(str(problem), scan_path, atlas_path)}")
        except FmriInputError as error:
            return ScanView(None, f"**Could not read this scan.** {_shown(str(error), scan_path, atlas_path)}")
        read = self.processor.windows_per_scan
        if len(windows) < read:
            return ScanView(
                None, f"**This scan is too short.** The model reads {read} window(s); it gives {len(windows)}."
            )
        name = Path(scan_path).name
        status = (
            f"**{name}**: {scan.n_rois} ROIs × {scan.n_timepoints} frames at TR {scan.tr:g} s → {len(windows)} window(s) of "
            f"{extractor.window_length} frames at TR {extractor.target_tr:g} s; the model reads the first {read}."
        )
        description = self.describe(scan, scan_path)
        same_atlas = self.reference is not None and self.reference.n_rois == scan.n_rois
        networks = self.reference.roi_labels if same_atlas else ["ROIs"] * scan.n_rois
        return ScanView(
            scan,
            status,
            _image(
                lambda path: plot_windows(
                    windows, read, extractor.target_tr, f"{name}: windows after preprocessing", path
                )
            ),
            _image(lambda path: plot_fc_with_description(scan.data, networks, description.strip("*"), name, path)),
            description,
        )

    def describe(self, scan: Any, scan_path: str) -> str:
        """The scan's descriptor text against the corpus's cohort reference (or why there is none)."""
        if self.reference is None:
            return "*No descriptor text: start the app with `--corpus DIR` (a descriptor corpus) to describe scans against its cohort.*"
        from .descriptors.new_scan import describe_new_scan

        try:
            return describe_new_scan(scan, self.reference)
        except FmriInputError as error:
            return f"*No descriptor text for this scan:* {_shown(str(error), scan_path)}"

    def answer(
        self, question: str, turns: list[tuple[str, str]] | None, scan: Any
    ) -> tuple[list[tuple[str, str]], str]:
        """`(turns with the new answer, status)`; problems (no scan, empty question, too long) go to the status."""
        turns = list(turns or [])
        if scan is None:
            return turns, NO_SCAN
        conversation = Conversation(self.model, self.processor, scan, self.chat_template, self.max_new_tokens, turns)
        try:
            conversation.ask(question)
        except FmriInputError as error:
            return turns, f"**Could not answer.** {error}"
        return conversation.turns, ""

    def blocks(self) -> Any:
        """The Gradio page."""
        gr = _gradio()
        with gr.Blocks(
            title="fmrilm: ask about a scan", analytics_enabled=False, delete_cache=(CACHE_SWEEP_S, CACHE_AGE_S)
        ) as page:
            gr.Markdown(
                "# Ask an fMRI-language model about a scan\n"
                f"Model: `{self.model.config.text_config.model_type}` language model with {self.model.config.num_codes} fMRI "
                f"tokens; scans of {self.processor.feature_extractor.num_rois} ROIs."
            )
            scan_state = gr.State(None, time_to_live=SESSION_TTL_S)
            turns_state = gr.State([], time_to_live=SESSION_TTL_S)
            uploads_state = gr.State([], time_to_live=SESSION_TTL_S, delete_callback=_remove_uploads)
            with gr.Row():
                scan_file = gr.File(
                    label="Scan: NIfTI (with an atlas), .mat, .npy, .npz, .h5, .tsv, .csv", elem_id="scan-file"
                )
                atlas_file = gr.File(
                    label="Label atlas for a NIfTI scan (.nii/.nii.gz on its grid)", elem_id="atlas-file"
                )
                tr = gr.Number(label=TR_FIELD, value=0, minimum=0, elem_id="tr")
            status = gr.Markdown(NO_SCAN, elem_id="scan-status")
            windows_plot = gr.Image(
                label="Windows the model reads", type="pil", interactive=False, elem_id="windows-plot"
            )
            connectivity_plot = gr.Image(
                label="Functional connectivity and description", type="pil", interactive=False, elem_id="fc-plot"
            )
            description = gr.Markdown(elem_id="description")
            chat = gr.Chatbot(label="Conversation about the scan", render_markdown=False, elem_id="chat")
            with gr.Row():
                question = gr.Textbox(
                    label="Question",
                    placeholder="Is this participant a control or a patient?",
                    elem_id="question",
                    scale=4,
                )
                ask = gr.Button("Ask", variant="primary", elem_id="ask", scale=1)
            ask_status = gr.Markdown(elem_id="ask-status")

            def show(scan_path: str | None, atlas_path: str | None, tr_value: float | None, uploads: list[str]):
                shown = self.view(scan_path, atlas_path, tr_value)
                _return_freed_memory()
                uploads = sorted({*uploads, *filter(None, (scan_path, atlas_path))})
                return shown.scan, [], uploads, [], shown.status, shown.windows, shown.connectivity, shown.description

            def forget(request) -> None:  # noqa: ANN001 (annotated below)
                """The tab closed: run the states' delete callbacks now (the uploads go) rather than in an hour."""
                page.state_holder.delete_state(request.session_hash)
                _return_freed_memory()

            forget.__annotations__["request"] = gr.Request  # Gradio passes the request to a parameter of this type

            def reply(text: str, turns: list[tuple[str, str]], scan: Any):
                turns, problem = self.answer(text, turns, scan)
                messages = [
                    {"role": role, "content": content}
                    for q, a in turns
                    for role, content in (("user", q), ("assistant", a.strip() or "(empty answer)"))
                ]
                return turns, messages, "" if not problem else text, problem

            outputs = [
                scan_state,
                turns_state,
                uploads_state,
                chat,
                status,
                windows_plot,
                connectivity_plot,
                description,
            ]
            for trigger in (scan_file.change, atlas_file.change, tr.submit):
                trigger(show, [scan_file, atlas_file, tr, uploads_state], outputs)
            page.unload(forget)
            for trigger in (ask.click, question.submit):
                trigger(reply, [question, turns_state, scan_state], [turns_state, chat, question, ask_status])
        return page


def _private_temporary_folder() -> Callable[[Any], Any]:
    """Point Gradio's temporary folder (`GRADIO_TEMP_DIR`, read when components and the server are made)
    at a new folder inside it, and return the server lifespan that removes that folder, with whatever
    Gradio left there, when the server stops, and points the variable back."""
    previous = os.environ.get("GRADIO_TEMP_DIR")
    if previous is not None:
        os.makedirs(previous, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="fmrilm-app-", dir=previous)
    os.environ["GRADIO_TEMP_DIR"] = folder

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            if previous is None:
                os.environ.pop("GRADIO_TEMP_DIR", None)
            else:
                os.environ["GRADIO_TEMP_DIR"] = previous

    return lifespan


def serve(
    model: str | Path,
    corpus: str | Path | None = None,
    atlas: str | Path | None = None,
    port: int | None = DEFAULT_PORT,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    chat_template: bool = False,
    trust_remote_code: bool = False,
    block: bool = True,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
) -> tuple[Any, str]:
    """Load `model` and serve the page on 127.0.0.1 (never another interface), with uploads of at most
    `max_upload_mb` MB.

    Returns `(page, local URL)`; with `block=False` the server runs in a background thread until
    `page.close()`.
    """
    _gradio()
    uploads_folder = _private_temporary_folder()
    app = AskApp(
        *load_model(model, trust_remote_code), corpus=corpus, atlas=atlas, max_new_tokens=max_new_tokens,
        chat_template=chat_template, max_upload_mb=max_upload_mb,
    )  # fmt: skip
    page = app.blocks().queue(max_size=16)
    _, url, _ = page.launch(
        server_name=HOST, server_port=port, share=False, inbrowser=False, show_error=False, prevent_thread_lock=True, quiet=True,
        max_file_size=int(max_upload_mb * 1e6), state_session_capacity=STATE_SESSIONS,
        app_kwargs={"lifespan": uploads_folder},
    )  # fmt: skip
    if block:
        logger.info(f"fmrilm app: {url} (this machine only); Ctrl-C stops it")
        page.block_thread()
    return page, url


__all__ = ["AskApp", "HOST", "ScanView", "serve"]
