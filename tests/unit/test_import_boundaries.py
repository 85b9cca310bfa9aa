"""Import direction: calibration -> inspector -> engines. The daemon never imports calibration;
engines import nothing of ours above them; storage never imports cv2 or torch."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imports_of(package: str) -> dict[str, set[str]]:
    out = {}
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        out[str(path.relative_to(ROOT))] = names
    return out


def test_engines_import_nothing_above_them():
    bad = {f: n & {"inspector", "calibration"} for f, n in imports_of("engines").items() if n & {"inspector", "calibration"}}
    assert not bad, bad


def test_runtime_never_imports_calibration_except_offline_commands():
    offline = {"inspector/commands/calibrate.py", "inspector/commands/bench.py", "inspector/commands/demo.py"}
    bad = {f for f, n in imports_of("inspector").items() if "calibration" in n and f not in offline}
    assert not bad, bad


def test_daemon_process_does_not_load_calibration_or_torch():
    # torch is loaded only where it runs: the torch engine, or the bf16 kNN search of a bundle
    # calibrated at bf16 (inspector/methods/knn_bf16.py); importing the daemon loads neither
    code = ("import sys; import inspector.commands.run as r; import inspector.service, inspector.runtime, "
            "inspector.sources.folder, inspector.methods.registry, engines.openvino_engine, "
            "engines.onnxruntime_engine; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('calibration', 'torch')))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def test_storage_imports_no_cv2_or_torch():
    bad = {f: n & {"cv2", "torch"} for f, n in imports_of("inspector/storage").items() if n & {"cv2", "torch"}}
    assert not bad, bad
