#!/bin/bash
# What the real-hardware check needs on a GPU machine without network whose image already holds
# PyTorch (a cloud GPU image, an air-gapped node), made here where PyPI is reachable:
#   tools/gpu_check_bundle.sh DIR      then, there, from a checkout:  tools/gpu_check_image.sh DIR
# DIR gets: wheels.tar.xz (the hub's and the single-user server's packages for the image's Python,
# unpacked and packed solid: half the size of the wheels), node.tar.xz (Node and the proxy, from
# this checkout's node_modules) and gpulab's own wheel (its entry points). The image's own packages
# are left out (IMAGE_HAS: names, one per line or space-separated).
set -euo pipefail
DIR=${1:?usage: tools/gpu_check_bundle.sh DIR}
PYVER=${PYVER:-3.12}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
mkdir -p "$DIR" && DIR=$(cd "$DIR" && pwd)
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
"$PY" -m pip wheel -q --no-deps -w "$W/w" onetimepass   # an sdist only; nativeauthenticator needs it
# the hub's packages at requirements.txt's pins (the rest: what the hub and a server need with them)
PINS=()
for name in jupyterhub jupyterhub-nativeauthenticator oauthenticator jupyterhub-ldapauthenticator SQLAlchemy \
            alembic jsonschema jupyter-resource-usage batchspawner dockerspawner docker jupyterhub-idle-culler; do
  PINS+=("$(grep -i "^$name==" "$ROOT/requirements.txt" | cut -d' ' -f1)")
done
"$PY" -m pip download -q --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -f "$W/w" -d "$W/w" "${PINS[@]}" ipykernel jupyter_server
"$PY" - "$W/w" "${IMAGE_HAS:-}" <<'PY'
import os, re, sys
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
has = {norm(n) for n in sys.argv[2].split()} | {"rfc3987-syntax"}  # left out as by make install
for f in os.listdir(sys.argv[1]):
    if norm(f.split("-")[0]) in has:
        os.remove(os.path.join(sys.argv[1], f))
PY
mkdir "$W/un"
for f in "$W"/w/*.whl; do mkdir "$W/un/$(basename "$f")"; "$PY" -c "import zipfile, sys; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$f" "$W/un/$(basename "$f")"; done
tar -C "$W/un" -cf - . | xz -T0 -9 > "$DIR/wheels.tar.xz"
mkdir -p "$W/node/bin" && cp "$(command -v node)" "$W/node/bin/" && cp -a "$ROOT/node_modules" "$W/node/"
tar -C "$W/node" -cf - bin node_modules | xz -T0 -6 > "$DIR/node.tar.xz"
git -C "$ROOT" archive --format=tar HEAD | (mkdir "$W/src" && tar -C "$W/src" -xf -)
"$PY" -m pip wheel -q --no-deps -w "$DIR" "$W/src"
du -sh "$DIR"/*
