#!/bin/bash
# The real-hardware check on a GPU machine without network whose image holds PyTorch, from a
# bundle made by tools/gpu_check_bundle.sh. Run from a checkout, as root:
#   tools/gpu_check_image.sh BUNDLE     (TORCH_VENV: the image's environment, default its python3's;
#                                        OUT: where the log, the report and the hubs' logs go)
# A venv beside the image's own (which it sees through a .pth file, so the image stays as it is)
# gets the bundle's wheels; the proxy runs on the bundle's Node; then tools/gpu_check.py
# --python-env runs the PyTorch profile from that venv, with the image's PyTorch.
set -u
B=$(cd "${1:?usage: tools/gpu_check_image.sh BUNDLE}" && pwd)
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpulab-gpu-check}; mkdir -p "$OUT"
exec > >(tee -a "$OUT/device.log") 2>&1
T0=$(date +%s)
IMG=${TORCH_VENV:-/opt/torch/.venv}
[ -x "$IMG/bin/python3" ] || IMG=$(python3 -c "import sys; print(sys.prefix)")
ENV=${CHECK_ENV:-/opt/gpulab-check-env}
echo "== $(date -u) on $(hostname); the image's environment: $IMG"
nvidia-smi; nvidia-smi -L; uname -r; stat -fc %T /sys/fs/cgroup; cat /proc/self/cgroup; ps -p 1 -o comm=
BASE=$("$IMG/bin/python3" -c 'import sys; print(sys._base_executable)')
"$IMG/bin/python3" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.is_available())'
echo "== the venv and its wheels ($(($(date +%s)-T0)) s)"
rm -rf "$ENV" /tmp/gpulab-un /tmp/gpulab-whl && mkdir -p /tmp/gpulab-un /tmp/gpulab-whl
"$BASE" -m venv "$ENV" || exit 2
SP=$("$ENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$IMG/bin/python3" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$SP/gpulab-image.pth"
"$BASE" -c "import tarfile, sys; tarfile.open(sys.argv[1]).extractall('/tmp/gpulab-un')" "$B/wheels.tar.xz" || exit 3
"$ENV/bin/python" - <<'PY'
import os, zipfile
for d in sorted(os.listdir("/tmp/gpulab-un")):  # each folder is one wheel, unpacked: zip it again
    with zipfile.ZipFile(f"/tmp/gpulab-whl/{d}", "w", zipfile.ZIP_STORED) as z:
        for root, _, files in os.walk(f"/tmp/gpulab-un/{d}"):
            for f in files:
                z.write(os.path.join(root, f), os.path.relpath(os.path.join(root, f), f"/tmp/gpulab-un/{d}"))
PY
"$ENV/bin/python" -m pip install -q --no-index --no-deps --no-compile /tmp/gpulab-whl/*.whl "$B"/gpulab-*.whl || exit 4
"$ENV/bin/python" -c 'import jupyterhub, torch, ipykernel; print("jupyterhub", jupyterhub.__version__, "torch", torch.__version__)' || exit 5
echo "== Node and the proxy ($(($(date +%s)-T0)) s)"
mkdir -p /tmp/gpulab-node && "$BASE" -c "import tarfile, sys; tarfile.open(sys.argv[1]).extractall('/tmp/gpulab-node')" "$B/node.tar.xz" || exit 6
export PATH=/tmp/gpulab-node/bin:$PATH
[ -e node_modules ] || ln -s /tmp/gpulab-node/node_modules node_modules
node --version
# the servers run as system users: the interpreter's folders must be theirs to read
for p in "$(readlink -f "$BASE")" "$IMG" "$ENV"; do
  d=$p; while [ "$d" != / ]; do d=$(dirname "$d"); chmod o+x "$d" 2>/dev/null; done
done
su -s /bin/sh nobody -c "$ENV/bin/python -c 'import torch, jupyterhub'" || echo "WARNING: a system user cannot import torch and jupyterhub from $ENV"
echo "== tools/gpu_check.py ($(($(date +%s)-T0)) s)"
PYTHONUNBUFFERED=1 timeout "${CHECK_TIMEOUT:-460}" "$ENV/bin/python" tools/gpu_check.py --no-build --python-env "$ENV" \
  --envs-dir /tmp/gpulab-envs --report "$OUT/report.json" --keep
rc=$?
echo "gpu_check exited $rc after $(($(date +%s)-T0)) s"
i=0; for f in /tmp/gpulab-gpucheck-*/hub/hub.log /tmp/gpulab-gpushare-*/hub/hub.log; do
  [ -f "$f" ] && i=$((i+1)) && tail -c 4000000 "$f" > "$OUT/hub$i.log"; done
exit $rc
