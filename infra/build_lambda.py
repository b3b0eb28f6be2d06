"""Build the Lambda deployment zip from the lock file of its dependencies.

    python infra/build_lambda.py                      # download wheels, then build
    python infra/build_lambda.py --download-only      # fill the wheelhouse (needs PyPI)
    python infra/build_lambda.py --offline            # build from the wheelhouse only
    python infra/build_lambda.py --lock               # refresh the lock file (needs PyPI)

The zip holds ``currents_export/`` without the local kit (``currents_export/kit/``: the
emulator and the fixtures generator, which the product never imports) and the runtime
dependencies as wheels for the target (default: Python 3.12 on arm64, as in
``template.yaml``): ``pyproject.toml``'s dependencies and its ``lambda`` extra (Powertools
for AWS Lambda, without Powertools' own extras), minus boto3 and botocore, which the
Lambda runtime provides. The
wheels are exactly those of ``infra/lambda-requirements.txt``: every package pinned,
with the sha256 of its wheels, and pip checks them (``--require-hashes``) when it
downloads and again when it installs, so a wheel swapped on the index, or a new release,
never reaches the zip unnoticed. ``--lock`` rewrites that file: it resolves the runtime
dependencies of ``pyproject.toml`` and its ``lambda`` extra (newest versions within their
bounds) for the Lambda's
Python on both architectures and records the hashes of the wheels pip chose. Entries are
sorted and timestamps fixed, so the same inputs give the same zip.
"""

from __future__ import annotations

import argparse
import hashlib
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
LOCK = ROOT / "infra" / "lambda-requirements.txt"
LOCK_PYTHON = re.compile(r"^# python: (\S+)$", re.MULTILINE)
LAMBDA_EXTRA = "lambda"  # pyproject.toml's extra of what only the Lambda needs


def canonical_name(name: str) -> str:
    """A distribution's name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return canonical_name(re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].strip())


def runtime_requirements() -> list[str]:
    """The project's dependencies and its ``lambda`` extra, without what the runtime
    already has."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"][LAMBDA_EXTRA]]
    return [requirement for requirement in wanted
            if requirement_name(requirement) not in IN_RUNTIME]


def _pip_target_args(arch: str, python: str) -> list[str]:
    return ["--platform", PLATFORMS[arch], "--implementation", "cp",
            "--python-version", python, "--only-binary=:all:"]


def locked(lock: Path | None = None) -> dict[str, str]:
    """The lock's pins: {name: version}."""
    pins = {}
    for line in (lock or LOCK).read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line):
            pins[canonical_name(match[1])] = match[2]
    return pins


def check_lock(python: str, lock: Path | None = None) -> None:
    """Refuse a lock that is missing, for another Python, or without a runtime dependency."""
    lock = lock or LOCK
    if not lock.is_file():
        sys.exit(f"{lock} is missing: run `python infra/build_lambda.py --lock`")
    found = LOCK_PYTHON.search(lock.read_text())
    if found is None or found[1] != python:
        sys.exit(f"{lock} is for Python {found[1] if found else '?'}, not {python}: run "
                 f"`python infra/build_lambda.py --lock --python {python}`")
    missing = {requirement_name(r) for r in runtime_requirements()} - set(locked(lock))
    if missing:
        sys.exit(f"{lock} does not pin {', '.join(sorted(missing))} (pyproject.toml does): "
                 f"run `python infra/build_lambda.py --lock`")


def download(wheelhouse: Path, arch: str, python: str) -> None:
    check_lock(python)
    wheelhouse.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "-d", str(wheelhouse),
                    *_pip_target_args(arch, python), "--require-hashes", "-r", str(LOCK)],
                   check=True)


def _wheel_name_and_version(wheel: Path) -> tuple[str, str]:
    name, version = wheel.name.split("-")[:2]  # name-version(-build)?-python-abi-platform.whl
    return canonical_name(name), version


def write_lock(python: str, lock: Path | None = None) -> dict[str, str]:
    """Resolve the runtime dependencies for the Lambda (``python``, every architecture) and
    write the lock: the chosen versions, with the sha256 of each architecture's wheel."""
    versions: dict[str, str] = {}
    hashes: dict[str, set[str]] = {}
    for arch in sorted(PLATFORMS):
        with tempfile.TemporaryDirectory() as wheels_dir:
            wheels = Path(wheels_dir)
            # pip resolves for the target's wheel tags and Requires-Python; environment
            # markers are this interpreter's (the same for the current dependencies).
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-cache-dir",
                            "-d", str(wheels), *_pip_target_args(arch, python),
                            *runtime_requirements()], check=True)
            for wheel in sorted(wheels.glob("*.whl")):
                name, version = _wheel_name_and_version(wheel)
                if versions.setdefault(name, version) != version:
                    sys.exit(f"{name}: {versions[name]} on one architecture, {version} on "
                             f"{arch}: pin it in pyproject.toml")
                digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
                hashes.setdefault(name, set()).add(digest)
    if set(versions) & IN_RUNTIME:
        sys.exit(f"a dependency pulls in {', '.join(sorted(set(versions) & IN_RUNTIME))}, "
                 "which the Lambda runtime provides: leave it out of the zip first")
    lines = [
        "# The Lambda zip's dependencies: exact versions and the sha256 of their wheels,",
        f"# resolved for CPython {python} on "
        f"{' and '.join(PLATFORMS[arch] for arch in sorted(PLATFORMS))}",
        "# from the runtime dependencies of pyproject.toml and its lambda extra (boto3 and",
        "# botocore are the runtime's). infra/build_lambda.py installs this with",
        "# --require-hashes.",
        "# Refresh (after changing those dependencies, or to take new releases):",
        "#     python infra/build_lambda.py --lock",
        f"# python: {python}",
    ]
    for name in sorted(versions):
        lines.append(f"{name}=={versions[name]} \\")
        digests = sorted(hashes[name])
        lines += [f"    --hash=sha256:{digest}" + (" \\" if i < len(digests) - 1 else "")
                  for i, digest in enumerate(digests)]
    (lock or LOCK).write_text("\n".join(lines) + "\n")
    return versions


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
        check_lock(python)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index",
                        "--find-links", str(wheelhouse), "--target", str(staging),
                        *_pip_target_args(arch, python), "--require-hashes", "-r", str(LOCK)],
                       check=True)
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
    mode.add_argument("--lock", action="store_true",
                      help=f"resolve the runtime dependencies anew and rewrite "
                           f"{LOCK.relative_to(ROOT)}, then stop")
    args = parser.parse_args(argv)
    if args.lock:
        pins = write_lock(args.python)
        print(f"locked {', '.join(f'{n}=={v}' for n, v in sorted(pins.items()))} for Python "
              f"{args.python} in {LOCK.relative_to(ROOT)}")
        return 0
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
