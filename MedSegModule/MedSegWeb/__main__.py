"""``python -m MedSegWeb`` (what ``medseg web`` runs): start the web app on localhost."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .work_folder import DEFAULT_UPLOAD_LIMIT_MB


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medseg web", description="MedSeg in the browser (trame-slicer).")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    parser.add_argument("--open", dest="open_path", help="a volume on the server to load at start")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_UPLOAD_LIMIT_MB,
                        help=f"largest accepted upload (default {DEFAULT_UPLOAD_LIMIT_MB} MB)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sys.argv = sys.argv[:1]  # trame parses sys.argv too; it gets its settings from serve() only
    if not os.environ.get("DISPLAY"):  # a server: render off-screen with EGL (Mesa's llvmpipe without a GPU)
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_THREADER", "Platform")  # slicer-core's vtkITK with TBB crashes at exit
    from MedSegExtension.errors import MedSegError

    from .app import serve

    try:
        serve(args.host, args.port, args.open_path, args.max_upload_mb)
    except MedSegError as exc:
        print(f"medseg: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
