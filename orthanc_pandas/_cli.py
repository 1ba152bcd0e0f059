"""Command line: ``orthanc-pandas index URL -o index.parquet`` and ``orthanc-pandas demo``.

Passwords are never taken on the command line (they would land in shell history and ``ps``):
they come from ``ORTHANC_PASSWORD``, ``~/.netrc``, or a prompt when ``--user`` is given.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time

from orthanc_pandas._demo import run_demo
from orthanc_pandas._ops.read import read_orthanc
from orthanc_pandas.errors import OrthancPandasError
from orthanc_pandas.testing._servers import install_debian_orthanc, orthanc_root


def _auth(args) -> tuple[str, str] | None:
    user = args.user or os.environ.get("ORTHANC_USERNAME")
    if not user:
        return None  # the client still looks at ~/.netrc
    password = os.environ.get("ORTHANC_PASSWORD")
    if password is None:
        if not sys.stdin.isatty():
            raise SystemExit("orthanc-pandas: --user given but no ORTHANC_PASSWORD in the "
                             "environment and no terminal to prompt for it.")
        password = getpass.getpass(f"Orthanc password for {user}: ")
    return (user, password)


def summary(df) -> str:
    """A short human summary of an index frame (used by ``index`` and ``demo``)."""
    c = df.orthanc.counts
    lines = [f"{c['patients']} patients, {c['studies']} studies, {c['series']} series, "
             f"{c['instances']} instances from {df.attrs.get('orthanc', {}).get('url', '?')} "
             f"(Orthanc {df.attrs.get('orthanc', {}).get('version', '?')})"]
    if len(df):
        per_mod = df.groupby("Modality", observed=True, dropna=False).agg(
            series=("SeriesInstanceUID", "nunique"), instances=("SOPInstanceUID", "size"))
        lines.append(per_mod.sort_values("instances", ascending=False).to_string())
    return "\n".join(lines)


def cmd_index(args) -> int:

    t0 = time.perf_counter()
    df = read_orthanc(args.url, auth=_auth(args), progress=None if not args.quiet else False,
                      verify=False if args.insecure else (args.ca_bundle or True))
    elapsed = time.perf_counter() - t0
    df.to_parquet(args.output)
    print(summary(df))
    print(f"read in {elapsed:.2f} s; wrote {args.output} "
          f"({os.path.getsize(args.output) / 1e6:.1f} MB, {len(df.columns)} columns)")
    return 0


def cmd_demo(args) -> int:

    run_demo(args.output_dir)
    return 0


def cmd_install_orthanc(args) -> int:

    dest = args.dest or orthanc_root(args.suite)
    if not args.quiet:
        print(f"Installing Debian {args.suite}'s Orthanc into {dest} (once; reused later)...",
              file=sys.stderr)
    print(install_debian_orthanc(args.suite, dest))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="orthanc-pandas", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    ix = sub.add_parser("index", help="read a server's whole index into a parquet file")
    ix.add_argument("url", help="http[s]://host[:port][/prefix] of the Orthanc REST API")
    ix.add_argument("-o", "--output", default="index.parquet", help="parquet file to write")
    ix.add_argument("-u", "--user", help="user name (password from ORTHANC_PASSWORD or a prompt)")
    ix.add_argument("--ca-bundle", help="CA bundle to verify the server's TLS certificate")
    ix.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    ix.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    ix.set_defaults(func=cmd_index)
    demo = sub.add_parser("demo", help="start a throw-away Orthanc with sample data and show what the library does")
    demo.add_argument("--output-dir", default=".", help="where demo-index.parquet and the PNG go")
    demo.set_defaults(func=cmd_demo)
    inst = sub.add_parser("install-orthanc", help="install a current Debian Orthanc (sid: 1.13, "
                          "trixie: 1.12) into its own root file system, for LocalOrthanc(root=...)")
    inst.add_argument("--suite", default="sid", choices=["sid", "trixie"])
    inst.add_argument("--dest", help="folder of the root (default ~/.cache/orthanc-pandas/roots/SUITE)")
    inst.add_argument("-q", "--quiet", action="store_true")
    inst.set_defaults(func=cmd_install_orthanc)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (OrthancPandasError, ValueError) as exc:
        print(f"orthanc-pandas: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
