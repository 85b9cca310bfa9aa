"""The README's install commands tell the truth: PyPI's Linux torch wheel is the CUDA build (with
several GB of NVIDIA packages), so a CPU machine installs torch from PyTorch's CPU wheel index,
as PyTorch documents it; the GPU line PC takes the plain one. And .ci/run runs the README's test
command as written."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CPU_TORCH = "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"


def section(title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, flags=re.S | re.M)
    assert m, f"README has no section {title!r}"
    return m.group(1)


def bash_blocks(text: str) -> list[list[str]]:
    return [[line for line in block.strip().splitlines() if line.strip()]
            for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_quickstart_is_two_single_commands_with_the_cpu_wheel():
    blocks = bash_blocks(section("Quickstart"))
    assert len(blocks) == 2 and all(len(b) == 1 for b in blocks), blocks
    demo, tests = blocks[0][0], blocks[1][0]
    assert demo.endswith("inspector demo") and "pytest" in tests
    for command in (demo, tests):
        assert CPU_TORCH in command, command
        # torch first, so `pip install -e .` finds its torch requirement met and pulls nothing from PyPI
        assert command.index(CPU_TORCH) < command.index("pip install -e")


def test_install_section_names_both_machines():
    text = section("Install")
    assert CPU_TORCH in text
    assert re.search(r"^pip install torch==2\.13\.0\s+#.*GPU", text, flags=re.M), text


def test_ci_runs_the_readme_test_command_verbatim():
    command = bash_blocks(section("Quickstart"))[1][0]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert command in ci.splitlines(), "the README's test command is not a line of .ci/run"
