"""Every fenced code block of README.md runs here, so that no example goes stale. Each runs in a folder that holds
the files it names (copies of the shipped photos and test video): Python blocks as scripts; the HTTP and MCP
blocks against a launched app; shell blocks command by command. The install and test commands are the ones
test_package.py and .ci/run run; here they are checked to be those."""

import json
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import EXAMPLES, ROOT
from PIL import Image
from served_app import served_app

from letcolor import BUNDLED_MODEL_DIR

README = ROOT / "README.md"
TEST_DATA = ROOT / "tests" / "data"
APP_URL = "http://127.0.0.1:7860/"
# The README's files, made from the shipped photos: name -> example photo (converted to the name's format).
PHOTOS = {
    "photo.jpg": "china.jpg",
    "old_photo.jpg": "historical_b.jpg",
    "beach.jpg": "coffee.png",
    "reference.jpg": "coffee.png",
    "a.jpg": "chelsea_gray.png",
    "b.png": "rocket_gray.png",
    "b.jpg": "rocket_gray.png",
    "scan.tif": "historical_c.jpg",
    "old_photos/first.jpg": "historical_d.jpg",
    "old_photos/second.png": "astronaut_gray.png",
    "more/third.jpg": "historical_e.jpg",
    "photos/colour_one.png": "coffee.png",
    "photos/colour_two.jpg": "china.jpg",
}
VIDEOS = ("film.mov", "film.mp4")
COMMANDS_AT_ONCE = 2  # a shell block's commands that need no earlier one's output run side by side (2 cores)
# Quick settings appended to each training, evaluation and benchmark command (the last of a repeated option wins),
# and the shared corpora replaced by their shipped cuts.
QUICK_SETTINGS = {
    "train": ["--steps", "1", "--val-images", "4", "--precise-bn-batches", "0", "--workers", "0"],
    "evaluate": ["--limit", "12"],  # of the cut's 256 validation photos: 55 of block 5's 92 s
    "bench": ["--repeats", "1"],
}


def readme_blocks() -> list[tuple[str, str, int]]:
    """(language, code, line number) of each fenced block."""
    text = README.read_text()
    return [
        (match["language"], match["code"], text.count("\n", 0, match.start()) + 1)
        for match in re.finditer(r"^```(?P<language>\w*)\n(?P<code>.*?)^```$", text, flags=re.M | re.S)
    ]


BLOCKS = readme_blocks()


def blocks_with(language: str, needle: str) -> list[str]:
    return [code for lang, code, _ in BLOCKS if lang == language and needle in code]


@pytest.fixture
def folder(tmp_path) -> Path:
    for name, example in PHOTOS.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.open(EXAMPLES / example).save(tmp_path / name)
    for name in VIDEOS:
        shutil.copy(TEST_DATA / "camvid_drive_cut.mp4", tmp_path / name)  # MOV and MP4 share the container
    shutil.copytree(BUNDLED_MODEL_DIR, tmp_path / "my-model")
    strokes = Image.new("RGBA", Image.open(tmp_path / "photo.jpg").size)
    strokes.paste((200, 40, 30, 255), (100, 100, 180, 120))
    strokes.save(tmp_path / "strokes.png")
    (tmp_path / "hints.json").write_text(json.dumps([[120, 80, "#c0392b"], [400, 300, [40, 90, 200]]]))
    return tmp_path


def run(command: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    env["LETCOLOR_CACHE"] = str(cwd / "cache")  # the onnxruntime engine's exported graphs
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{shlex.join(command)}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def run_side_by_side(commands, cwd: Path) -> list[subprocess.CompletedProcess]:
    """Runs the commands COMMANDS_AT_ONCE at a time (one thread each), each after the earlier ones that write what it
    names or where it writes: the README's order kept where it matters (124 s -> 82 s for the four blocks)."""
    done, earlier = [], []
    with ThreadPoolExecutor(COMMANDS_AT_ONCE) as pool:
        for command in commands:
            needed = [finished for output, finished in earlier if output in command]
            done.append(pool.submit(run_after, needed, command, cwd))
            earlier.append((output_of(command), done[-1]))
        return [each.result() for each in done]


def run_after(needed: list[Future], command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    for earlier in needed:
        earlier.result()  # (raises where it failed)
    return run(command, cwd)


def output_of(command: list[str]) -> str | None:
    """What a command writes: its -o or --output."""
    flags = [index for index, word in enumerate(command[:-1]) if word in ("-o", "--output")]
    return command[flags[-1] + 1] if flags else None


def run_script(code: str, cwd: Path) -> subprocess.CompletedProcess:
    (cwd / "example.py").write_text(code)
    return run([sys.executable, "example.py"], cwd)


def shell_commands(code: str) -> list[list[str]]:
    """The block's commands: continuation lines joined, comments dropped, `&&` chains split."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        command = []
        for word in [*shlex.split(line, comments=True), "&&"]:
            if word != "&&":
                command.append(word)
            elif command:
                commands.append(command)
                command = []
    return commands


def as_runnable(command: list[str]) -> list[str]:
    """The command as this checkout runs it: `python`/`letcolor` by this interpreter, the shared corpora by their
    shipped cuts, the bundled model by its directory, with QUICK_SETTINGS."""
    if command[0] == "letcolor":
        command = ["python", "-m", "letcolor", *command[1:]]
    command = [sys.executable if part == "python" else part for part in command]
    command = [part.replace("../shared/data", str(TEST_DATA)) for part in command]
    command = [str(BUNDLED_MODEL_DIR) if part == "letcolor/pretrained" else part for part in command]
    if command[1:3] == ["-m", "train"]:
        return [*command, *QUICK_SETTINGS["train"]]
    if command[1:3] == ["-m", "letcolor"] and command[3] in QUICK_SETTINGS:
        return [*command, *QUICK_SETTINGS[command[3]]]
    return command


def test_every_block_is_one_that_a_test_here_runs():
    kinds = [classify(language, code) for language, code, _ in BLOCKS]
    unknown = [line for (language, code, line), kind in zip(BLOCKS, kinds, strict=True) if kind is None]
    assert not unknown, f"README blocks at lines {unknown} are run by no test"
    assert {"install", "tests", "python", "http", "mcp", "shell"} <= set(kinds)


def classify(language: str, code: str) -> str | None:
    if language == "bash" and "pip install -r tests/requirements.txt" in code:
        return "tests"
    if language == "bash" and "pip install" in code:
        return "install"
    if language == "python" and "gradio_client" in code:
        return "http"
    if language == "python" and "mcp" in code:
        return "mcp"
    if language == "python":
        return "python"
    if language == "bash" and all(command[0] in ("python", "letcolor") for command in shell_commands(code)):
        return "shell"
    return None


def test_the_install_and_test_commands_are_those_that_ci_and_test_package_run():
    ci = (ROOT / ".ci" / "run").read_text()
    (tests,) = blocks_with("bash", "pip install -r tests/requirements.txt")
    for command in shell_commands(tests):
        words = " ".join(command).replace("python ", "python3 ")
        assert words in ci or words.replace("install -r", "install -q -r") in ci or "apt-get install" in words
    assert "apt-get install -y -q chromium" in ci
    installs = blocks_with("bash", "pip install torch==")
    torch_lines = {" ".join(c) for code in installs for c in shell_commands(code) if "torch==" in " ".join(c)}
    (torch_line,) = torch_lines  # one CPU torch command, the one test_package.py installs from
    assert torch_line.startswith("pip install torch==") and torch_line.endswith("/whl/cpu")


@pytest.mark.slow
def test_the_install_blocks_other_commands_run(folder):
    for code in [code for language, code, _ in BLOCKS if classify(language, code) == "install"]:
        for command in shell_commands(code):
            if command[0] == "letcolor":
                run(as_runnable(command), folder)
                assert (folder / "colored" / "old_photo.jpg").is_file()
            else:  # installs are test_package.py's and .ci/run's; `python app.py` is test_app.py's
                assert command[:2] == ["pip", "install"] or command == ["python", "app.py"], command


@pytest.mark.slow
@pytest.mark.parametrize("index", [i for i, (lang, code, _) in enumerate(BLOCKS) if classify(lang, code) == "python"])
def test_python_block_runs(folder, index):
    run_script(BLOCKS[index][1], folder)


@pytest.mark.slow
@pytest.mark.parametrize("index", [i for i, (lang, code, _) in enumerate(BLOCKS) if classify(lang, code) == "shell"])
def test_shell_block_runs(folder, index):
    commands = shell_commands(BLOCKS[index][1])
    for command, result in zip(commands, run_side_by_side(map(as_runnable, commands), folder), strict=True):
        if "bench" in command:
            assert "| fp32" in result.stdout  # the table
        elif "-o" in command:
            written = folder / command[command.index("-o") + 1]
            assert written.is_file() or any(written.iterdir())
        else:
            assert (folder / command[command.index("--output") + 1] / "final" / "model.safetensors").is_file()


@pytest.fixture(scope="module")
def app_url():
    with served_app(BUNDLED_MODEL_DIR) as url:
        yield url


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["http", "mcp"])
def test_api_block_runs_against_the_launched_app(folder, app_url, kind):
    (code,) = [code for lang, code, _ in BLOCKS if classify(lang, code) == kind]
    assert APP_URL in code
    result = run_script(code.replace(APP_URL, app_url), folder)
    if kind == "http":
        assert "Colorized 2 of 2 photos." in result.stdout and ".mp4" in result.stdout
    else:
        assert "_color.png" in result.stdout
