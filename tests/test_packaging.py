"""environment.yml and the workflow's conda env agree with pyproject.toml; the README's commands exist."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def pip_requirements(path: Path) -> set[str]:
    env = yaml.safe_load(path.read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    return {r for r in pip if not r.startswith("-")}


def name(req: str) -> str:
    return re.split(r"[<>=!~ \[]", req, maxsplit=1)[0].lower()


def test_conda_environments_match_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {name(d): d for d in project["dependencies"]}
    with_tests = {**runtime, **{name(d): d for d in project["optional-dependencies"]["test"]}}
    for env_file, deps in [
        (ROOT / "environment.yml", with_tests),
        (ROOT / "workflow" / "envs" / "rlae-sc.yaml", runtime),
    ]:
        reqs = {name(r): r for r in pip_requirements(env_file)}
        assert set(reqs) == set(deps), env_file
        for pkg, req in reqs.items():
            if pkg != "torch":  # pinned exactly in the environments, a range in pyproject
                assert req == deps[pkg], (env_file, req, deps[pkg])
        assert reqs["torch"] == "torch==2.13.0"


def test_readme_commands_are_make_targets():
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in ["run", "test"]:
        assert f"make {target}" in readme
        assert re.search(rf"^{target}:", makefile, flags=re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_code_passes_ruff():
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "rlae_sc", "tests", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr
