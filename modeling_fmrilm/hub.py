"""Publishing a folder to the Hugging Face Hub: exported checkpoints (`fmrilm push`) and the
descriptor corpus (`descriptors.corpus.push_to_hub`) go through the one function here."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from .errors import FmriInputError

HUB_URL = "https://huggingface.co"
REPO_KINDS = ("model", "dataset")


def repo_url(repo_id: str, repo_type: str = "model") -> str:
    """The Hub page of `repo_id` (`{HUB_URL}/ORG/NAME`, `{HUB_URL}/datasets/ORG/NAME`)."""
    return f"{HUB_URL}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"


def push_folder(
    folder: str | Path,
    repo_id: str,
    repo_type: Literal["model", "dataset"] = "model",
    token: str | None = None,
    private: bool = False,
    api: Any = None,
) -> str:
    """Create `repo_id` if needed and upload every file of `folder` to it with `huggingface_hub`.

    Args:
        folder: the folder to publish (an `fmrilm export` folder, a descriptor corpus).
        repo_id: `ORG/NAME`.
        repo_type: `"model"` or `"dataset"`.
        token: Hub token; default: the one `huggingface-cli login` stored, or `HF_TOKEN`.
        private: create the repository as private.
        api: an object with `HfApi`'s `create_repo` and `upload_folder` (default
            `HfApi(token=token)`); tests pass one that writes to a local folder.

    Returns:
        The repository's URL.

    Raises:
        FmriInputError: `folder` is not a non-empty folder, `repo_id` is not `ORG/NAME`, or
            `repo_type` is unknown.
    """
    folder = Path(folder)
    if not folder.is_dir() or not any(folder.iterdir()):
        raise FmriInputError(
            f"{folder}: expected a non-empty folder to upload, found {'an empty folder' if folder.is_dir() else 'no folder'}"
        )
    if repo_type not in REPO_KINDS:
        raise FmriInputError(f"repo_type: expected one of {REPO_KINDS}, found {repo_type!r}")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise FmriInputError(f"repo_id: expected ORG/NAME, found {repo_id!r}")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=repo_type)
    return repo_url(repo_id, repo_type)


__all__ = ["push_folder", "repo_url"]
