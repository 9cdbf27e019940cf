"""The wheel built from the checkout is fit to publish: metadata, the readme, py.typed, license."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_carries_its_metadata_the_readme_and_py_typed(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (wheel,) = tmp_path.glob("gradcheck_suite-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "gradcheck_suite/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith("/LICENSE") for n in names), names
    for field in ("License: MIT", "Classifier: Framework :: Pytest", "Classifier: Typing :: Typed",
                  "Description-Content-Type: text/markdown", "Requires-Python: >=3.10", "Provides-Extra: test"):
        assert field in meta, field
    assert "## Quickstart" in meta             # the README is the long description
