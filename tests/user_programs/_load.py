"""Import a corpus program by its file path (the way the reloading child process does)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent


def program_names() -> list[str]:
    """Every program module of the corpus: the files here not starting with test_ or _."""
    return sorted(path.stem for path in HERE.glob("*.py")
                  if not path.stem.startswith(("test_", "_", "conftest")))


def import_program(name: str) -> ModuleType:
    """The module ``tests/user_programs/<name>.py``, imported by path under a private name."""
    module_name = f"user_program_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
