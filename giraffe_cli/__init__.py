"""The ``giraffe`` command line (typer). The only package that imports all the others."""

from giraffe_cli.app import app, main

__all__ = ["app", "main"]
