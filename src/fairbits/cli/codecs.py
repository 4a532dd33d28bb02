"""``fairbits codecs``: every registered codec, its kind and whether it can run here."""

from __future__ import annotations

import typer

from fairbits.cli.common import exit_on_error, set_offline


def codecs(offline: bool = typer.Option(False, "--offline", help="never download weights")):
    """List every registered codec: name, kind, and whether it can run here; under a learned
    codec, its built-in checkpoints (key, training variant, λ, measured bpp and PSNR, card)."""
    set_offline(offline)
    from fairbits.codecs.base import available_codecs, get_codec
    from fairbits.codecs.checkpoints import builtin_checkpoints, learned_settings_summary, read_card

    with exit_on_error():
        for name, kind, reason in available_codecs():
            status = "available" if reason is None else "unavailable: " + reason
            if reason is None and kind not in ("classical", "system"):
                ready = bool(get_codec(name).settings)
                status = ("available" if ready else "needs weights") + f" ({learned_settings_summary(name)})"
            print(f"{name:<28} {kind:<11} {status}")
            for key, path, _ in builtin_checkpoints(name) if kind not in ("classical", "system") else []:
                print("  " + checkpoint_line(key, read_card(path), path.with_suffix(".md")))


def checkpoint_line(key: str, card: dict, card_md) -> str:
    """One built-in checkpoint: ``key  variant  λ=…  0.036 bpp  25.5 dB  card: PATH``."""
    from fairbits.codecs.checkpoints import card_variant

    lmbda = f"λ={card['lmbda']:g}" if isinstance(card.get("lmbda"), (int, float)) else ""
    bpp = f"{card['bpp']:.3f} bpp" if isinstance(card.get("bpp"), (int, float)) else "bpp unknown"
    psnr = f"{card['psnr']:.1f} dB" if isinstance(card.get("psnr"), (int, float)) else ""
    card_at = f"card: {card_md}" if card_md.is_file() else "no card"
    return f"{key:<26} {card_variant(card):<10} {lmbda:<10} {bpp:<11} {psnr:<8} {card_at}"


def register(app: typer.Typer) -> None:
    """Add ``codecs`` to ``app``."""
    app.command()(codecs)


__all__ = ["codecs", "register"]
