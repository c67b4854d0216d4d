"""The Hugging Face Space's metadata: README.md's YAML front matter is generated from space.yaml.

    python -m letcolor.space          # rewrite the front matter block at the top of README.md
    python -m letcolor.space --check  # exit status 1 when README.md's front matter differs from space.yaml

Only the front matter is rewritten; the rest of README.md is left as it is.
"""

import argparse
import sys
from pathlib import Path

import yaml
from huggingface_hub import metadata_load, metadata_save

ROOT = Path(__file__).resolve().parent.parent
SPACE_YAML = ROOT / "space.yaml"
README = ROOT / "README.md"


def load_space_metadata(path: Path = SPACE_YAML) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def front_matter_matches(readme: Path = README, space_yaml: Path = SPACE_YAML) -> bool:
    """True when README.md's front matter holds exactly the metadata of space.yaml."""
    return metadata_load(readme) == load_space_metadata(space_yaml)


def write_front_matter(readme: Path = README, space_yaml: Path = SPACE_YAML) -> None:
    metadata_save(readme, load_space_metadata(space_yaml))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when README.md is out of date")
    args = parser.parse_args(argv)
    if not SPACE_YAML.is_file():
        parser.error(f"runs in a checkout of letcolor: it rewrites its README.md from space.yaml, not at {SPACE_YAML}")
    if not args.check:
        write_front_matter(README, SPACE_YAML)
        return 0
    if front_matter_matches(README, SPACE_YAML):
        return 0
    print(f"{README.name}'s front matter differs from {SPACE_YAML.name}: run python -m letcolor.space", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
