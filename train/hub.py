"""Uploading a trained model to the Hugging Face Hub (or any server that speaks its API: HF_ENDPOINT)."""

from pathlib import Path

from huggingface_hub import HfApi


def push_to_hub(directory: Path, repo_id: str) -> str:
    """Create the model repo if needed and upload `directory` (config.json, model.safetensors, README.md)."""
    api = HfApi()
    api.create_repo(repo_id, repo_type="model", exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, folder_path=directory, commit_message="Upload letcolor model")
    return commit.commit_url
