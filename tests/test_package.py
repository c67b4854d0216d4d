"""`pip install` of the checkout: a wheel that carries the bundled model and examples, and a `letcolor` command
that works from any directory, installed as the README says into a virtual environment that sees no other package
(so that a dependency the package forgets to declare fails here, as it would on a user's clean machine)."""

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest
from conftest import EXAMPLES, ROOT
from PIL import Image

from letcolor import BUNDLED_MODEL_DIR, LetThereBeColor, metrics
from letcolor.video import read_frames

# What is not a source file of the checkout: built or run here, or a virtual environment.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", "build", "*.egg-info", "__pycache__", ".*_cache", "runs", "test-artifacts", ".venv", "venv", "*.whl"
)


def run(command: list, cwd: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "LETCOLOR_MODEL")}
    result = subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip install .` builds from a copy of the checkout (offline: setuptools is already installed)."""
    source, wheels = tmp_path_factory.mktemp("checkout") / "letcolor", tmp_path_factory.mktemp("wheels")
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, source], source)
    (built,) = wheels.glob("letcolor-*.whl")
    return built


def readme_cpu_torch_install() -> list[str]:
    """The README's command that installs the CPU build of torch, as arguments to pip."""
    (command,) = set(re.findall(r"pip install (torch==[^`&\n]*--index-url \S+/cpu)", (ROOT / "README.md").read_text()))
    return command.split()


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv that sees no other package: CPU torch as the README installs it, then the wheel with the
    dependencies it declares (from the package index, or pip's cache and local wheels where they hold them)."""
    environment = tmp_path_factory.mktemp("venv")
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    # No retries: where the PyTorch index cannot be reached (a machine with only a local wheel), fail over at once.
    run([*pip, "--retries", "0", *readme_cpu_torch_install()], environment)
    run([*pip, wheel], environment)
    return environment / "bin"


@pytest.mark.slow
def test_the_wheel_holds_the_package_its_bundled_model_and_examples_and_nothing_else(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"letcolor/pretrained/model.safetensors", "letcolor/pretrained/config.json"} <= names
    assert {f"letcolor/examples/{path.name}" for path in EXAMPLES.iterdir()} <= names
    assert "letcolor/examples/LICENSES.md" in names and "letcolor/cli.py" in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    tops = {name.split("/")[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"letcolor"}


@pytest.mark.slow
def test_the_sdist_is_the_package_and_builds_the_same_wheel(wheel, tmp_path):
    """It carried tests/test_*.py without conftest.py and tests/data: tests that could not run."""
    source = tmp_path / "letcolor"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    build = "from setuptools import build_meta; print(build_meta.build_sdist('../sdist'))"
    name = run([sys.executable, "-c", build], source).stdout.split()[-1]
    with tarfile.open(tmp_path / "sdist" / name) as sdist:
        names = {member.name.split("/", 1)[1] for member in sdist.getmembers() if "/" in member.name}
        sdist.extractall(tmp_path / "unpacked", filter="data")
    assert not any(name.startswith("tests") for name in names)
    assert {"README.md", "LICENSE", "pyproject.toml", "letcolor/pretrained/model.safetensors"} <= names
    unpacked = tmp_path / "unpacked" / name.removesuffix(".tar.gz")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path, unpacked], unpacked)
    (rebuilt,) = tmp_path.glob("letcolor-*.whl")
    assert set(zipfile.ZipFile(rebuilt).namelist()) == set(zipfile.ZipFile(wheel).namelist())


@pytest.mark.slow
def test_the_installed_api_loads_the_bundled_model_from_another_directory(installed, tmp_path):
    code = (
        "import letcolor; from letcolor import Colorizer, LetThereBeColor; "
        "colorizer = Colorizer.from_pretrained(); "
        "model = LetThereBeColor.from_pretrained(letcolor.BUNDLED_MODEL_DIR); "
        "print(letcolor.__file__); print(json.dumps([colorizer.class_names, model.class_names])); "
        "print(colorizer(letcolor.EXAMPLES_DIR / 'china.jpg').image.size)"
    )
    module, names, size = run([installed / "python", "-c", f"import json; {code}"], tmp_path).stdout.splitlines()
    assert Path(module).is_relative_to(installed.parent), "imported from the checkout, not the installed wheel"
    assert size == str(Image.open(EXAMPLES / "china.jpg").size)  # the examples, found where letcolor is installed
    bundled = LetThereBeColor.from_pretrained(BUNDLED_MODEL_DIR).class_names
    assert json.loads(names) == [bundled, bundled] and len(bundled) > 1


@pytest.mark.slow
def test_the_letcolor_command_colorizes_a_photo_and_a_video_from_another_directory(installed, tmp_path):
    photo, clip = tmp_path / "photo.png", tmp_path / "clip.mp4"
    shutil.copy(EXAMPLES / "chelsea_gray.png", photo)
    shutil.copy(ROOT / "tests" / "data" / "camvid_drive_cut.mp4", clip)
    run([installed / "letcolor", "colorize", "photo.png", "-o", "out/"], tmp_path)
    written = Image.open(tmp_path / "out" / "photo.png")
    assert written.size == Image.open(photo).size
    assert metrics.colorfulness(metrics.image_tensor(written)).item() > 3
    run([installed / "letcolor", "colorize", "clip.mp4", "-o", "out/"], tmp_path)
    assert len(list(read_frames(tmp_path / "out" / "clip.mp4"))) == len(list(read_frames(clip)))
    usage = run([installed / "letcolor", "--help"], tmp_path).stdout
    module_usage = run([installed / "python", "-m", "letcolor", "--help"], tmp_path).stdout
    assert usage.startswith("usage: letcolor [-h]") and module_usage.startswith("usage: python -m letcolor [-h]")
    same = " ".join(usage.replace("letcolor", "python -m letcolor", 1).split()) == " ".join(module_usage.split())
    assert same and "colorize" in usage  # the same help, wrapped to the program name's length


@pytest.mark.slow
def test_the_venv_sees_no_package_but_its_own(installed, tmp_path):
    code = "import importlib.util as u; print(u.find_spec('gradio') is None, u.find_spec('pytest') is None)"
    assert run([installed / "python", "-c", code], tmp_path).stdout.split() == ["True", "True"]


@pytest.mark.slow
def test_versus_bench_installed_says_that_it_compares_git_checkouts(installed, tmp_path):
    """It said only git's "not a git repository" (it compares this checkout with an earlier commit)."""
    command = [str(installed / "python"), "-m", "letcolor.versus_bench", "--turns", "1"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1 and "compares git checkouts of letcolor" in result.stderr
    assert "site-packages" in result.stderr and "run it in a clone" in result.stderr


def lowest_declared(package: str) -> str:
    """The lowest version of `package` that pyproject.toml's dependencies allow."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (version,) = [match[1] for each in dependencies if (match := re.fullmatch(rf"{package}>=([\w.]+)", each))]
    return version


@pytest.mark.slow
def test_the_lowest_declared_versions_of_numpys_compiled_users_import_with_the_lowest_numpy(tmp_path):
    """pyproject allowed opencv-python-headless 4.8 (and pyarrow 15) beside numpy 2 (pip checked it fine): built for
    numpy 1, it made `import letcolor` fail ("numpy.core.multiarray failed to import") for a user who had it already."""
    venv.create(tmp_path, with_pip=True)
    python = tmp_path / "bin" / "python"
    packages = ["numpy", "opencv-python-headless", "onnxruntime", "pyarrow"]
    wanted = [f"{package}=={lowest_declared(package)}" for package in packages]
    run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", *wanted], tmp_path)
    uses = """
import cv2, numpy, onnxruntime, pyarrow
pyarrow.array(numpy.arange(3))
cv2.cvtColor(numpy.zeros((2, 2, 3), "uint8"), cv2.COLOR_BGR2GRAY)
"""
    run([python, "-c", uses], tmp_path)
