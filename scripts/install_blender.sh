#!/usr/bin/env bash
# Install Blender's Python module (bpy, from PyPI) into its own virtual environment for `--renderer blender`.
#
#   bash scripts/install_blender.sh                 # -> ~/.local/share/newtonrewards/blender-venv (the default)
#   bash scripts/install_blender.sh /opt/nr-blender # elsewhere; then: export NR_BLENDER_PYTHON=/opt/nr-blender/bin/python
#
# bpy has wheels for CPython 3.11 only and pins numpy<2, so it cannot share the project's environment: the renderer
# runs it as a child process (newtonrewards/bench_gen/renderers/blender_worker.py) in this one. About 400 MB; a rerun
# that finds bpy already importable there does nothing.
set -euo pipefail
BPY_SPEC="${NR_BPY_SPEC:-bpy==4.2.0}"
VENV="${1:-${XDG_DATA_HOME:-$HOME/.local/share}/newtonrewards/blender-venv}"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import bpy" >/dev/null 2>&1; then
  echo "bpy is already installed in $VENV"
  exit 0
fi
PY="${NR_BLENDER_BASE_PYTHON:-}"
if [ -z "$PY" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY="$candidate"; break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "install_blender.sh: bpy needs CPython 3.11 and none was found (python3.11); set NR_BLENDER_BASE_PYTHON" >&2
  exit 1
fi
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "$BPY_SPEC" "numpy<2"
"$VENV/bin/python" -c "import bpy, numpy; print('bpy', bpy.app.version_string, 'numpy', numpy.__version__)"
echo "installed $BPY_SPEC in $VENV (the default newtonrewards looks for; elsewhere: NR_BLENDER_PYTHON=$VENV/bin/python)"
