"""The README's client example runs as written against a real server."""

import os
import re
import subprocess
import sys
from pathlib import Path

from llama_stack_provider_trl.demo.stack_server import StackServer

from conftest import REPO_ROOT


def test_readme_client_example_runs_as_written(stack: StackServer, tiny_model: Path, tmp_path: Path) -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    [example] = [
        block
        for block in re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
        if "LlamaStackClient(" in block  # the full example; other blocks are fragments
    ]
    script = tmp_path / "example.py"
    script.write_text(example)

    env = {**os.environ, "LLAMA_STACK_URL": stack.base_url, "MODEL": str(tiny_model)}
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stderr
    assert "\ncompleted" in result.stdout
    checkpoints = [
        line.split(":", 1)[1].strip() for line in result.stdout.splitlines() if line.startswith("checkpoint:")
    ]
    assert len(checkpoints) == 3  # after epoch 1, after epoch 2, final
    assert all((Path(path) / "config.json").is_file() for path in checkpoints)


def _drawn_paths(tree: str) -> list[str]:
    """The paths the Layout's tree draws under the package, each from its indentation ("├── " at depth 1, "│   ├── "
    at depth 2); a folder ends with "/"."""
    paths, folders = [], []
    for line in tree.splitlines():
        branch = max(line.find("├── "), line.find("└── "))
        if branch < 0:
            continue  # the package's own line, a continuation, or something beside the package
        depth = branch // 4
        name = line[branch + 4 :].split()[0]
        del folders[depth:]
        path = "".join(folders) + name
        paths.append(path)
        if name.endswith("/"):
            folders.append(name)
    return paths


def test_the_layout_section_draws_every_module_of_the_package_where_it_is() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    [layout] = re.findall(r"## Layout\n.*?```text\n(.*?)```", readme, flags=re.DOTALL)
    package = REPO_ROOT / "llama_stack_provider_trl"
    drawn = _drawn_paths(layout)
    # demo/ is drawn as a folder; a folder's __init__.py goes with the folder
    modules = [p.relative_to(package) for p in package.rglob("*.py")]
    modules = [m for m in modules if m.parts[0] != "demo" and (m.name != "__init__.py" or len(m.parts) == 1)]

    assert sorted(str(m) for m in modules if str(m) not in drawn) == []
    assert [path for path in drawn if not (package / path).exists()] == []
