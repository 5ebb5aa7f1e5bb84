"""The ``giraffe`` command line (info, generate, serve). The outermost layer: commands import the library lazily.

Errors: a command that fails on bad input prints one line to stderr, ``error[CODE]: what was wrong``
(a second line, ``hint: ...``, says what to do when the error has a hint), and exits with code 2;
never a traceback. ``CODE`` is a :class:`~giraffe_core.errors.GiraffeError`'s code (its section in
docs/errors.md); a pydantic validation error names the field (``error[invalid-value]: Model.field:
what it should be``); any other ``ValueError``, ``RuntimeError`` or ``OSError`` that escapes a
command is reported the same way by the command group, with its type as the code. Set
``GIRAFFE_DEBUG=1`` to get the traceback of such an error instead.
"""

from __future__ import annotations

import enum
import importlib
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

console = Console()
#: where errors go: stderr, so that ``--json`` output on stdout stays parseable
err_console = Console(stderr=True)
#: errors a command may raise on bad input that are reported as one line (exit code 2), not a traceback
USER_ERRORS: tuple[type[Exception], ...] = (ValueError, RuntimeError, OSError)


def error_text(exc: BaseException) -> str:
    """What ``giraffe`` prints for ``exc``: ``error[CODE]: message`` on one line, and for an error
    with a hint, ``  hint: ...`` on a second line.

    A pydantic ``ValidationError`` gives its first error: ``error[invalid-value]: Model.loc.path:
    msg`` (and how many more there are); its input value is never printed (it may be a secret).
    """
    from giraffe_core.errors import GiraffeError

    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False, include_input=False)
        first = errors[0] if errors else {"loc": (), "msg": str(exc)}
        field = ".".join([exc.title, *(str(part) for part in first["loc"])])
        more = f" (and {len(errors) - 1} more invalid value(s))" if len(errors) > 1 else ""
        message = _one_line(first["msg"]).removeprefix("Value error, ")  # a validator's own words
        return f"error[invalid-value]: {field}: {message}{more}"
    if isinstance(exc, GiraffeError):
        hint = f"\n  hint: {_one_line(exc.hint)}" if exc.hint else ""
        return f"error[{exc.code}]: {exc.message.strip()}{hint}"
    return f"error[{type(exc).__name__}]: {_one_line(str(exc)) or type(exc).__name__}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _fail(exc: BaseException) -> NoReturn:
    """Print ``exc`` as :func:`error_text` says (stderr, never wrapped) and exit with code 2."""
    text = error_text(exc)
    err_console.print(Text("error", style="bold red") + Text(text.removeprefix("error")), soft_wrap=True)
    raise typer.Exit(code=2) from exc


class GiraffeGroup(TyperGroup):
    """The ``giraffe`` command group: a :data:`USER_ERRORS` error that escapes a command (a
    command catches the library's own errors, but a pydantic or a third-party ValueError may slip
    through) is reported by :func:`_fail` instead of a traceback, unless ``GIRAFFE_DEBUG=1``."""

    def invoke(self, ctx: typer.Context) -> Any:
        """Run the command; report what escapes it as one line, exit code 2."""
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise  # typer's own exit and abort are RuntimeErrors (its usage errors are not USER_ERRORS)
        except USER_ERRORS as exc:
            if os.environ.get("GIRAFFE_DEBUG") == "1":
                raise
            _fail(exc)


app = typer.Typer(
    name="giraffe",
    help="Giraffe: long-context visual agents on Qwen-VL models (M-RoPE++, hybrid resolution).",
    cls=GiraffeGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _environment() -> dict[str, Any]:
    import importlib.metadata as md

    import torch
    import transformers

    from giraffe_agent import find_chromium
    from giraffe_core import __version__
    from giraffe_core.extras import extra_status, is_available

    cuda = torch.cuda.is_available()
    browser = find_chromium()
    return {
        "giraffe": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "pillow": md.version("pillow"),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "cuda": torch.version.cuda if cuda else None,
        "torchvision": md.version("torchvision") if is_available("torchvision") else None,
        "extras": extra_status(),
        "browser": None if browser is None else {"path": browser.path, "source": browser.source},
    }


@app.command()
def info(as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table")) -> None:
    """Versions, torch device, installed extras and the browser the agent would launch."""
    env = _environment()
    if as_json:
        print(json.dumps(env, indent=2))
        return
    table = Table(title="giraffe info", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for key in ("giraffe", "python", "platform", "torch", "transformers", "pillow", "device", "cuda"):
        table.add_row(key, str(env[key]) if env[key] is not None else "-")
    table.add_row("torchvision", env["torchvision"] or "not installed (videos are fed as frames; fine)")
    for extra, dists in env["extras"].items():
        parts = [f"{d} {v}" if v else f"[yellow]{d} missing[/]" for d, v in dists.items()]
        table.add_row(f"extra: {extra}", ", ".join(parts))
    browser = env["browser"]
    table.add_row("browser", f"{browser['path']} ({browser['source']})" if browser
                  else "[yellow]none[/]: `playwright install chromium` or `apt-get install chromium`")
    console.print(table)


@app.command()
def generate(
    prompt: str = typer.Argument("Describe each screenshot.", help="the user message"),
    model: str = typer.Option("tiny", help="'tiny', a saved directory, or a hub id"),
    image: list[Path] | None = typer.Option(None, "--image", "-i", help="an image file; repeat for more"),
    context_length: int | None = typer.Option(None, help="extend the context to this many tokens"),
    rope: str = typer.Option("mrope_plus_plus", help="rope method used with --context-length"),
    max_image_tokens: int | None = typer.Option(None, help="visual-token budget per image"),
    max_new_tokens: int = typer.Option(32, help="tokens to generate"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of tables"),
) -> None:
    """Chat with a model about images (by default three built-in screenshots of different sizes)."""
    from giraffe_core import GiraffeError, load
    from giraffe_core.samples import sample_frames

    try:
        engine = load(model, context_length=context_length, rope=rope)
        frames: list[Any] = list(image) if image else sample_frames()
        content: list[dict[str, Any]] = [{"type": "image", "image": f} for f in frames]
        messages = [{"role": "user", "content": [*content, {"type": "text", "text": prompt}]}]
        inputs = engine.prepare(messages, default_max_tokens=max_image_tokens)
        result = engine.generate(inputs, max_new_tokens=max_new_tokens)
    except GiraffeError as exc:
        _fail(exc)
        return
    positions = inputs.position_ids
    report = {
        "model": engine.name,
        "rope": engine.rope_parameters,
        "context_length": engine.context_length,
        "prompt_tokens": result.prompt_tokens,
        "position_span": int(positions.max()) + 1,
        "frames": inputs.plan.summary() if inputs.plan else [],
        "completion": result.text,
        "completion_tokens": result.completion_tokens,
        "finish_reason": result.finish_reason,
    }
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return
    table = Table(title=f"{len(frames)} frames -> {result.prompt_tokens} prompt tokens "
                        f"(positions 0..{report['position_span'] - 1})")
    for col in ("frame", "source px", "resized px", "grid t,h,w", "tokens"):
        table.add_column(col, justify="right")
    for row in report["frames"]:
        table.add_row(str(row["index"]), "x".join(map(str, row["source_size"])), "x".join(map(str, row["size"])),
                      ",".join(map(str, row["grid_thw"])), str(row["tokens"]))
    console.print(table)
    console.print(f"[bold]{engine!r}[/]")
    if engine.name == "tiny":
        console.print("[dim]tiny preset: random weights, so the text below is noise; the pipeline is real.[/]")
    console.print(f"[bold]completion[/] ({result.completion_tokens} tokens, {result.finish_reason}): {result.text!r}")


class LogLevel(str, enum.Enum):
    """Log levels of ``giraffe serve`` (Python logging's and uvicorn's names)."""

    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"


@app.command()
def serve(
    model: str = typer.Option("tiny", help="'tiny', a saved directory, or a hub id"),
    host: str = typer.Option("127.0.0.1", help="interface to bind (anything but loopback needs --api-key)"),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port"),
    context_length: int | None = typer.Option(None, help="extend the context to this many tokens"),
    rope: str = typer.Option("mrope_plus_plus", help="rope method used with --context-length"),
    api_key: str | None = typer.Option(None, envvar="GIRAFFE_API_KEY", show_default=False,
                                       help="require 'Authorization: Bearer KEY' (prefer $GIRAFFE_API_KEY: "
                                            "ps shows command lines)"),
    allow_unauthenticated_remote: bool = typer.Option(
        False, "--allow-unauthenticated-remote", help="bind a non-loopback --host without an API key"),
    allowed_host: list[str] | None = typer.Option(
        None, "--allowed-host", help="another Host header to accept (NAME, NAME:PORT or *); repeat for more"),
    cors_origin: list[str] | None = typer.Option(
        None, "--cors-origin", help="an origin whose web pages may call the API (http://host:port); repeat"),
    image_dir: Path | None = typer.Option(
        None, "--image-dir", help="the one folder local image paths may name (default: local paths refused)"),
    allow_remote_urls: bool = typer.Option(False, "--allow-remote-urls",
                                           help="fetch http(s) image URLs (never private addresses)"),
    max_body_mb: float = typer.Option(20.0, min=0.001, help="largest request body, MiB (413 above it)"),
    max_image_pixels: int = typer.Option(16_777_216, min=1, help="pixels of one image (413 above it)"),
    max_request_pixels: int = typer.Option(67_108_864, min=1, help="pixels of all images of a request (413)"),
    max_images: int = typer.Option(1024, min=1, help="images in one request (413 above it)"),
    max_prompt_chars: int | None = typer.Option(
        None, min=1, help="characters of text in a request (413; default 8 per context token)"),
    max_pending: int = typer.Option(16, min=1, help="requests read, queued or run at once (503 above it)"),
    name: str | None = typer.Option(None, help="the model id clients pass (default: --model)"),
    log_level: LogLevel = typer.Option(LogLevel.info, help="log level of the server and uvicorn"),
) -> None:
    """Serve a model with the OpenAI chat completions API (needs the serve extra)."""
    import logging

    from pydantic import ValidationError

    from giraffe_core import ConfigError, GiraffeError, load
    from giraffe_core.engine import ServerConfig
    from giraffe_core.engine import serve as run_server
    from giraffe_core.engine.server_security import check_bind
    from giraffe_core.extras import require

    try:
        require("fastapi", extra="serve", purpose="run `giraffe serve`")
        require("uvicorn", extra="serve", purpose="run `giraffe serve`")
        try:
            config = ServerConfig(
                max_body_bytes=int(max_body_mb * 1024 * 1024), allow_remote_urls=allow_remote_urls,
                local_image_dir=image_dir, api_key=api_key or None,
                allow_unauthenticated_remote=allow_unauthenticated_remote,
                allowed_hosts=tuple(allowed_host or ()), cors_allowed_origins=tuple(cors_origin or ()),
                max_image_pixels=max_image_pixels, max_request_pixels=max_request_pixels,
                max_images_per_request=max_images, max_prompt_chars=max_prompt_chars,
                max_pending_requests=max_pending)
        except ValidationError as exc:  # the inputs are hidden (hide_input_in_errors): no key is echoed
            first = exc.errors(include_url=False, include_input=False)[0]
            raise ConfigError(f"giraffe serve: {first['msg'].removeprefix('Value error, ')}") from None
        check_bind(host, config)
        engine = load(model, context_length=context_length, rope=rope)
    except GiraffeError as exc:
        _fail(exc)
        return
    logging.basicConfig(level=log_level.value.upper(), format="%(levelname)s %(name)s: %(message)s")
    key_note = "API key required" if config.api_key is not None else "no API key"
    console.print(f"[bold]{engine!r}[/] on http://{host}:{port}/v1 as model {name or engine.name!r} ({key_note})")
    run_server(engine, host=host, port=port, model_name=name, config=config, log_level=log_level.value)


def main() -> None:
    """Entry point of the ``giraffe`` console script."""
    sys.exit(app())


if __name__ == "__main__":
    main()

# The command modules register themselves on `app`; imported last because they import `app`.
# Each imports its heavy dependencies inside its commands, so `giraffe --help` stays fast.
COMMAND_MODULES = ("agent_commands", "recording_commands", "eval_commands", "train_commands", "demo_commands")
for _name in COMMAND_MODULES:
    importlib.import_module(f"giraffe_cli.{_name}")
