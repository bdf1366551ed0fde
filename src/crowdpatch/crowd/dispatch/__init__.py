"""Dispatchers: who is handed which question, and which answers are stored (the rules: :mod:`.rules`).

:class:`~.memory.MemoryDispatcher` serves the in-process simulator; :class:`~.database.DatabaseDispatcher`
serves the web server's processes. Neither decides what is asked: that is the project's policy.
"""
