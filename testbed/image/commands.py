"""`testbed image build|path`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ..debian_mirror import debian_mirror
from ..errors import ConfigError
from ..hashing import short
from ..paths import GUEST_IMAGES_DIR
from .build import base_name, cached_image, ensure_image, image_dir
from .recipe import load_recipe, recipe_key
from .steps import convert_argv, mke2fs_argv, mmdebstrap_argv, overlay_argv


def _progress(line: str) -> None:
    # stdout carries only the result path, so `$(testbed image build)` works.
    print(line, file=sys.stderr, flush=True)


def _dry_run() -> int:
    recipe = load_recipe(GUEST_IMAGES_DIR)
    key = recipe_key(recipe)
    work = image_dir(key).parent / f".build-{short(key)}-XXXX"
    base = image_dir(key) / base_name(recipe.format)
    steps = [
        mmdebstrap_argv(recipe, debian_mirror(), work / "rootfs"),
        mke2fs_argv(work / "rootfs", work / "image.raw", recipe.size),
    ]
    if recipe.format == "qcow2":
        steps.append(convert_argv(work / "image.raw", work / "out" / base.name))
    steps.append(overlay_argv(base, recipe.format, Path("<vm dir>/overlay.qcow2")))
    print(f"# key {key}")
    for argv in steps:
        print(shlex.join(argv))
    return 0


def _build(args: argparse.Namespace) -> int:
    if args.dry_run:
        return _dry_run()
    print(ensure_image(progress=_progress).base)
    return 0


def _path(args: argparse.Namespace) -> int:
    image = cached_image()
    if image is None:
        raise ConfigError("the guest image for this recipe is not built; run `testbed image build`")
    print(image.ssh_key if args.ssh_key else image.base)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("image", help="the guest disk image: build it, find it")
    actions = parser.add_subparsers(dest="image_command", metavar="ACTION", required=True)
    build = actions.add_parser(
        "build", help="build the image for guest-images/ unless cached; print the base image path"
    )
    build.add_argument("--dry-run", action="store_true", help="print the cache key and build commands only")
    build.set_defaults(func=_build)
    path = actions.add_parser("path", help="print the cached base image path (error if not built)")
    path.add_argument("--ssh-key", action="store_true", help="print root's private SSH key path instead")
    path.set_defaults(func=_path)
