"""The response statuses of wire.md, defined once.

``types`` (``Response.is_terminal``), the request loop (which warns once about a status it does not
know) and the submission layer (a cancel's outcome) all read them here. A module of its own, so the
request loop does not import every wire type with a script's first ``Client()``.
"""

RESULT_STATUSES = frozenset({"completed", "incomplete"})
CANCELLED_STATUSES = frozenset({"cancelled", "canceled"})
TERMINAL_STATUSES = RESULT_STATUSES | CANCELLED_STATUSES | frozenset({"failed", "expired"})
RUNNING_STATUSES = frozenset({"queued", "in_progress"})
KNOWN_STATUSES = TERMINAL_STATUSES | RUNNING_STATUSES
