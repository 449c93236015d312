"""A local Telegram Bot API server for tests, demos and benchmarks.

The real aiogram ``Bot`` talks to it over HTTP exactly as to api.telegram.org, while
tests play the members' side through Python helpers, a JSON control API or a chat page.
See docs/emulator.md.
"""

from .emulator import TelegramEmulator
from .errors import ApiError, EmulatorError
from .limits import EmulatorLimits
from .server import start_emulator

__all__ = ["ApiError", "EmulatorError", "EmulatorLimits", "TelegramEmulator", "start_emulator"]
