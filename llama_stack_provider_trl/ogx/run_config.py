"""``llama-stack-trl-ogx-config [PATH]``: write a ready OGX run config whose paths hold from any directory.

OGX reads ``external_apis_dir`` relative to the directory the server starts in, so the repository's ogx-run.yaml
(``llama_stack_provider_trl/ogx/apis``) serves only from the repository root, and a pip-installed package has its
API spec somewhere in site-packages. This writes the same config (the package ships it as ``ogx/run.yaml``) with
``external_apis_dir`` set to the absolute path of the installed spec folder; ``ogx run PATH`` then starts from
anywhere. ``${env.VAR:=default}`` settings stay as they are, for OGX to fill in at start-up.
"""

import argparse
import re
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATE = PACKAGE_DIR / "run.yaml"  # the repository's ogx-run.yaml, shipped in the package
APIS_DIR = PACKAGE_DIR / "apis"  # the fine-tuning API's spec: the folder OGX's external_apis_dir names
_APIS_LINE = re.compile(r"^external_apis_dir:.*$", flags=re.MULTILINE)


def render(apis_dir: Path = APIS_DIR) -> str:
    """The run config's text, with ``external_apis_dir`` the absolute ``apis_dir``."""
    text, found = _APIS_LINE.subn(f"external_apis_dir: {apis_dir.resolve()}", TEMPLATE.read_text(), count=1)
    if not found:
        raise RuntimeError(f"{TEMPLATE} has no external_apis_dir line")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="llama-stack-trl-ogx-config",
        description="Write an OGX run config (Files + OpenAI's fine-tuning API over TRL) with absolute paths, "
        "for `ogx run PATH` from any directory.",
    )
    parser.add_argument("path", nargs="?", default="ogx-run.yaml", help="where to write it (default: ogx-run.yaml)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    args = parser.parse_args(argv)
    path = Path(args.path)
    if path.exists() and not args.force:
        print(f"{path} exists; pass --force to overwrite it", file=sys.stderr)
        return 1
    path.write_text(render())
    print(f"wrote {path}; start the server with: ogx run {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
