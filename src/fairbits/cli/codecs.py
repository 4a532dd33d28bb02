"""``fairbits codecs``: every registered codec, its kind and whether it can run here."""

from __future__ import annotations

import typer

from fairbits.cli.common import exit_on_error, set_offline


def codecs(offline: bool = typer.Option(False, "--offline", help="never download weights")):
    """List every registered codec: name, kind, and whether it can run here."""
    set_offline(offline)
    from fairbits.codecs.base import available_codecs, get_codec
    from fairbits.codecs.checkpoints import learned_settings_summary

    with exit_on_error():
        for name, kind, reason in available_codecs():
            status = "available" if reason is None else "unavailable: " + reason
            if reason is None and kind not in ("classical", "system"):
                ready = bool(get_codec(name).settings)
                status = ("available" if ready else "needs weights") + f" ({learned_settings_summary(name)})"
            print(f"{name:<28} {kind:<11} {status}")


def register(app: typer.Typer) -> None:
    """Add ``codecs`` to ``app``."""
    app.command()(codecs)


__all__ = ["codecs", "register"]
