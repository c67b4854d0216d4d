"""The Hugging Face Space's metadata: space.yaml, and README.md's front matter generated from it."""

import re
import shutil

import pytest

from letcolor import space
from letcolor.space import README, ROOT, front_matter_matches, load_space_metadata, write_front_matter


def test_readme_front_matter_is_generated_from_space_yaml():
    assert front_matter_matches(), "README.md's front matter is out of date: run python -m letcolor.space"


def test_check_fails_when_readme_differs(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README.read_text(encoding="utf-8").replace("sdk: gradio", "sdk: docker", 1), encoding="utf-8")
    assert not front_matter_matches(readme)


def test_generator_rewrites_only_the_front_matter(tmp_path):
    readme = tmp_path / "README.md"
    body = "# Title\n\nText with a rule:\n\n---\n\nmore: text\n"
    readme.write_text("---\ntitle: stale\n---\n" + body, encoding="utf-8")
    write_front_matter(readme)
    write_front_matter(readme)
    assert front_matter_matches(readme)
    assert readme.read_text(encoding="utf-8").endswith("---\n" + body)
    assert readme.read_text(encoding="utf-8").count("title:") == 1


def test_check_command_exit_status(tmp_path, monkeypatch):
    assert space.main(["--check"]) == 0
    readme = tmp_path / "README.md"
    shutil.copy(README, readme)
    readme.write_text(readme.read_text(encoding="utf-8").replace("app_file: app.py", "app_file: main.py", 1))
    monkeypatch.setattr(space, "README", readme)
    assert space.main(["--check"]) == 1


def test_outside_a_checkout_the_commands_say_where_they_run(tmp_path, monkeypatch, capsys):
    """Installed, space.py ended in a FileNotFoundError traceback about site-packages/README.md."""
    from letcolor import bench_app

    monkeypatch.setattr(space, "SPACE_YAML", tmp_path / "space.yaml")
    monkeypatch.setattr(bench_app, "APP", tmp_path / "app.py")
    for main in (space.main, bench_app.main):
        with pytest.raises(SystemExit) as exit_status:
            main([])
        assert exit_status.value.code == 2 and "runs in a checkout of letcolor" in capsys.readouterr().err


def test_space_metadata_fits_the_project():
    metadata = load_space_metadata()
    pinned_gradio = re.search(r"^gradio==(\S+)$", (ROOT / "requirements.txt").read_text(), re.MULTILINE).group(1)
    assert metadata["sdk"] == "gradio"
    assert metadata["sdk_version"] == pinned_gradio
    assert metadata["python_version"] == "3.11"
    assert (ROOT / metadata["app_file"]).is_file()
    assert metadata["suggested_hardware"] == "cpu-basic"
    assert len(metadata["short_description"]) <= 60  # the Hub's limit
