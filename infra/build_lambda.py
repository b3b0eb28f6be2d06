"""Build the Lambda deployment zip from the project's own dependency list.

    python infra/build_lambda.py                      # download wheels, then build
    python infra/build_lambda.py --download-only      # fill the wheelhouse (needs PyPI)
    python infra/build_lambda.py --offline            # build from the wheelhouse only

The zip holds ``currents_export/`` without the local kit (``currents_export/kit/``: the
emulator and the fixtures generator, which the product never imports) and the runtime
dependencies from ``pyproject.toml`` as wheels for the target (default: Python 3.12 on
arm64, as in ``template.yaml``), minus boto3 and botocore, which the Lambda runtime
provides. Entries are sorted and timestamps
fixed, so the same inputs give the same zip.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "infra" / "build"
IN_RUNTIME = {"boto3", "botocore"}  # provided by the Lambda Python runtime
PLATFORMS = {"arm64": "manylinux2014_aarch64", "x86_64": "manylinux2014_x86_64"}
FIXED_TIME = (2020, 1, 1, 0, 0, 0)
LEFT_OUT = ROOT / "currents_export" / "kit"  # the local kit: not needed to run the product


def runtime_requirements() -> list[str]:
    """The project's dependencies, without what the runtime already has."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = []
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].strip().lower()
        if name not in IN_RUNTIME:
            wanted.append(requirement)
    return wanted


def _pip_target_args(arch: str, python: str) -> list[str]:
    return ["--platform", PLATFORMS[arch], "--implementation", "cp",
            "--python-version", python, "--only-binary=:all:"]


def download(wheelhouse: Path, arch: str, python: str) -> None:
    wheelhouse.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "-d", str(wheelhouse),
                    *_pip_target_args(arch, python), *runtime_requirements()], check=True)


CONFIG_NAME = "currents-export.toml"  # CURRENTS_EXPORT_CONFIG=/var/task/currents-export.toml


def _left_out(directory: str, names: list[str]) -> set[str]:
    """What ``copytree`` leaves out of ``directory``: caches and the local kit."""
    skipped = set(shutil.ignore_patterns("__pycache__", "*.pyc")(directory, names))
    return skipped | {name for name in names if Path(directory, name) == LEFT_OUT}


def build(
    out: Path, wheelhouse: Path, arch: str, python: str, config: Path | None = None
) -> Path:
    with tempfile.TemporaryDirectory() as staging_dir:
        staging = Path(staging_dir)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index",
                        "--find-links", str(wheelhouse), "--target", str(staging),
                        *_pip_target_args(arch, python), *runtime_requirements()], check=True)
        shutil.copytree(ROOT / "currents_export", staging / "currents_export",
                        ignore=_left_out)
        if config is not None:
            shutil.copyfile(config, staging / CONFIG_NAME)
        out.parent.mkdir(parents=True, exist_ok=True)
        files = sorted(p for p in staging.rglob("*")
                       if p.is_file() and "__pycache__" not in p.parts)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            for path in files:
                info = zipfile.ZipInfo(path.relative_to(staging).as_posix(), FIXED_TIME)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, path.read_bytes())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=sorted(PLATFORMS), default="arm64")
    parser.add_argument("--python", default="3.12", help="target Python version")
    parser.add_argument("--out", type=Path, default=BUILD / "currents-export-lambda.zip")
    parser.add_argument("--wheelhouse", type=Path, default=None,
                        help="where wheels are kept (default: infra/build/wheels-ARCH-PY)")
    parser.add_argument("--config", type=Path, default=None,
                        help=f"TOML configuration to ship as /var/task/{CONFIG_NAME}")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--download-only", action="store_true")
    mode.add_argument("--offline", action="store_true", help="use only the wheelhouse")
    args = parser.parse_args(argv)
    wheelhouse = args.wheelhouse or BUILD / f"wheels-{args.arch}-{args.python}"
    if not args.offline:
        download(wheelhouse, args.arch, args.python)
    if args.download_only:
        print(f"wheels for {args.arch} / Python {args.python} in {wheelhouse}")
        return 0
    if args.config is not None and not args.config.is_file():
        parser.error(f"--config {args.config}: no such file")
    out = build(args.out, wheelhouse, args.arch, args.python, args.config)
    print(f"built {out} ({out.stat().st_size / 1e6:.1f} MB) for {args.arch} / Python "
          f"{args.python}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
