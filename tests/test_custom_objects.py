"""Every custom Keras object a checkpoint may hold is registered by ``register_custom_objects``.

A module whose classes are never imported before ``load_model`` makes Keras fail with
"Could not locate class 'BoxLoss'": resuming a localization run (its compiled loss) did.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import importlib, json, pkgutil
import keras
import transfer
from transfer.tasks.custom_objects import register_custom_objects

register_custom_objects()
registered = set(keras.saving.get_custom_objects())
for info in pkgutil.walk_packages(transfer.__path__, "transfer."):
    if info.name.startswith(("transfer.cli", "transfer.__main__")):
        continue
    importlib.import_module(info.name)
print(json.dumps(sorted(set(keras.saving.get_custom_objects()) - registered)))
"""


def test_register_custom_objects_registers_every_registered_class_of_the_package():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    missed = json.loads(done.stdout.strip().splitlines()[-1])
    assert missed == [], f"registered only when their module is imported by chance: {missed}"
