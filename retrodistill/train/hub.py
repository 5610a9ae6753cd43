"""Publishing a finished student to the Hugging Face Hub (``train-student --push-to-hub REPO``).

The token comes from the environment (``HF_TOKEN``) and is checked, with the repository id, before
training starts (:func:`hub_target`), so a missing token costs no training time. The push happens
only once the student folder is published and complete (:func:`push_student`): the card is
rewritten to name the repository, the repository is created if needed (``--private`` makes a new
one private) and the whole folder is uploaded in one commit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

TOKEN_VARIABLE = "HF_TOKEN"


class HubPushError(ValueError):
    """The student was written, but uploading it failed."""


@dataclass(frozen=True)
class HubTarget:
    """Where to push a student, and the credentials to do it with."""

    repo_id: str
    private: bool = False
    token: str = field(default="", repr=False)


def hub_target(repo_id: str, *, private: bool = False) -> HubTarget:
    """Check ``repo_id`` and read the token, before any work is done.

    Raises:
        ValueError: the repository id is malformed, or ``HF_TOKEN`` is not set (one line each).
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"--push-to-hub {repo_id!r} is not a Hub repository id (user/name): {first}") from None
    token = os.environ.get(TOKEN_VARIABLE, "").strip()
    if not token:
        raise ValueError(
            f"--push-to-hub needs a Hugging Face write token in the environment: set {TOKEN_VARIABLE} "
            "(create one at https://huggingface.co/settings/tokens)"
        )
    return HubTarget(repo_id, private, token)


def push_student(student_dir: str | Path, target: HubTarget) -> str:
    """Upload a finished student folder to ``target``; return the repository's URL.

    The folder's ``README.md`` is rewritten first so its usage example loads ``target.repo_id``.
    """
    from huggingface_hub import HfApi

    from retrodistill.artifacts import read_manifest
    from retrodistill.train.model_card import describe_loss, write_model_card

    student_dir = Path(student_dir)
    manifest = read_manifest(student_dir)
    write_model_card(student_dir, repo_id=target.repo_id)
    api = HfApi(token=target.token)
    try:
        repo = api.create_repo(target.repo_id, repo_type="model", private=target.private, exist_ok=True)
        api.upload_folder(
            repo_id=target.repo_id,
            repo_type="model",
            folder_path=str(student_dir),
            commit_message=f"retrodistill train-student: {describe_loss(manifest.get('loss') or {})}"[:200],
        )
    except Exception as err:  # HTTP, network or permission errors of the Hub client: one line, the student kept
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HubPushError(
            f"the student is complete at {student_dir}, but pushing it to {target.repo_id} failed: {first} "
            f"(retry with `hf upload {target.repo_id} {student_dir}`)"
        ) from err
    return str(getattr(repo, "url", None) or f"https://huggingface.co/{target.repo_id}")
