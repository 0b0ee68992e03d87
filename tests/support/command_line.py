"""`fmrilm` run in this process, its output read through pytest's `capsys`."""

from __future__ import annotations

from modeling_fmrilm import cli


def run(argv, capsys):
    """`fmrilm argv` in this process: (exit status, its stdout, its stderr)."""
    capsys.readouterr()  # what came before is not the command's
    try:
        cli.main(argv)
        status = 0
    except SystemExit as exit:
        status = exit.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err
