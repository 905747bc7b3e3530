"""Audio data for training and tests: rendering real scores, loading and chunking audio, captions."""

from .render import corpus_pieces, render_clips, render_score, soundfont_path, stock_soundfont_path

__all__ = ["corpus_pieces", "render_clips", "render_score", "soundfont_path", "stock_soundfont_path"]
