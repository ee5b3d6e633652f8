#!/usr/bin/env bash
# Download the wheels that the GPU machine's image lacks into benchmarks/gpu/.wheels/
# (git-ignored), for CPython 3.12 on manylinux x86_64, at the versions this project's
# .venv holds (the ones its tests pass with). run.sh installs them there with pip
# --no-index. The image already has torch, torchvision, numpy, Pillow, msgpack,
# prometheus-client, uvloop, requests, PyYAML, click, h11, jinja2, markupsafe and
# packaging; werkzeug is carried too so that Flask gets the version it was tested with.
#
#   benchmarks/gpu/fetch_wheels.sh                       # needs make env first
#   PY_VERSION=3.11 DEST=/tmp/w benchmarks/gpu/fetch_wheels.sh   # for another interpreter
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV_PYTHON=${VENV_PYTHON:-.venv/bin/python}
PY_VERSION=${PY_VERSION:-3.12}
DEST=${DEST:-benchmarks/gpu/.wheels}
LIMIT_MIB=${LIMIT_MIB:-16}  # of the 64 MiB that may travel with the working tree
PACKAGES=(flask blinker itsdangerous werkzeug gunicorn uvicorn uvicorn-worker httptools orjson)

pins=$("$VENV_PYTHON" - "${PACKAGES[@]}" <<'EOF'
import importlib.metadata as metadata
import sys

print(" ".join(f"{name}=={metadata.version(name)}" for name in sys.argv[1:]))
EOF
)

rm -rf "$DEST"
mkdir -p "$DEST"
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
# shellcheck disable=SC2086  # one argument per pin
"$VENV_PYTHON" -m pip download -q --no-deps --only-binary=:all: \
    --python-version "$PY_VERSION" --implementation cp "${platforms[@]}" \
    -d "$DEST" $pins

# Every package once, and nothing a package needs left out that the image lacks.
"$VENV_PYTHON" - "$DEST" "${PACKAGES[@]}" <<'EOF'
import re
import sys
import zipfile
from pathlib import Path

dest, wanted = Path(sys.argv[1]), sys.argv[2:]
in_image = {"click", "h11", "jinja2", "markupsafe", "packaging", "typing-extensions"}
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
wheels = sorted(dest.glob("*.whl"))
names = [norm(w.name.split("-")[0]) for w in wheels]
assert sorted(names) == sorted(map(norm, wanted)), f"expected one wheel each of {wanted}: {names}"
for wheel in wheels:
    with zipfile.ZipFile(wheel) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        for line in archive.read(meta).decode().splitlines():
            if line.startswith("Requires-Dist:") and "extra ==" not in line:
                spec = line.split(":", 1)[1].split(";")[0]
                need = norm(re.split(r"[ <>=!~\[(]", spec.strip())[0])
                marker = line.split(";", 1)[1] if ";" in line else ""
                if "python_version < " in marker.replace('"', "").replace("'", ""):
                    continue  # backports for older Pythons than the image's
                assert need in names or need in in_image, f"{wheel.name} needs {need}"
EOF

size=$(du -sm "$DEST" | cut -f1)
echo "$(ls "$DEST" | wc -l) wheels, ${size} MiB in $DEST:"
ls "$DEST"
if [ "$size" -gt "$LIMIT_MIB" ]; then
    echo "over ${LIMIT_MIB} MiB: the working tree and its carry must stay under 64 MiB" >&2
    exit 1
fi
