"""The one fixtures module of the test suite: tiny models, tokenizers and audio built in memory."""

from musicpeft.tiny import *  # noqa: F401,F403
