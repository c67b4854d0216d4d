"""Uploading a trained model to the Hugging Face Hub (or any server that speaks its API: HF_ENDPOINT)."""

import argparse
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HFValidationError, HTTPError
from huggingface_hub.utils import validate_repo_id


class PushError(Exception):
    """An upload that failed (the Hub unreachable, no token, no right to the repo): the model stays in its folder."""


def repo_id(text: str) -> str:
    """An argparse type: a Hub model repo id (USER/NAME or NAME), checked before any training."""
    try:
        validate_repo_id(text)
    except HFValidationError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def push_to_hub(directory: Path, repo_id: str) -> str:
    """Create the model repo if needed and upload `directory` (config.json, model.safetensors, README.md)."""
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=directory, commit_message="Upload letcolor model")
    except (HTTPError, OSError) as error:  # HfHubHTTPError (401, 403, ...) and transport errors alike
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        raise PushError(f"could not upload {directory} to the Hub repo {repo_id}: {reason}") from error
    return commit.commit_url
