"""Fail when two test files define a test of the same name: a failure report would not say which one failed.

Run by `make lint`: python scripts/duplicate_test_names.py [tests_dir]
"""

import ast
import sys
from collections import defaultdict
from pathlib import Path


def duplicate_test_names(tests_dir: Path) -> dict[str, list[str]]:
    files_of: dict[str, list[str]] = defaultdict(list)
    for path in sorted(tests_dir.glob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_"):
                files_of[node.name].append(path.name)
    return {name: files for name, files in files_of.items() if len(files) > 1}


def main() -> int:
    duplicates = duplicate_test_names(Path(sys.argv[1] if len(sys.argv) > 1 else "tests"))
    for name, files in duplicates.items():
        print(f"{name} is defined in {', '.join(files)}: give each a name that says what it tests")
    return 1 if duplicates else 0


if __name__ == "__main__":
    sys.exit(main())
