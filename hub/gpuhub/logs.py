"""Keep query strings out of the hub's log.

JupyterHub's own request log redacts a few parameter names, but tornado logs the full URI of
every request refused with an HTTPError that carries a log message (`400 GET
/hub/oauth_callback?code=...&state=...`), and of uncaught exceptions (the request's repr).
OAuth codes and `?token=` values must not reach `docker logs`, so every record that passes the
hub's console handler has each query string replaced, whichever logger wrote it: tornado's
loggers write through the JupyterHub application's handlers.
"""

from __future__ import annotations

import logging
import re

# A '?' that follows a path character and starts `name=...`: the query of a URI in a message,
# up to the next blank, quote or closing bracket. A question in prose ('ready? yes') has no '='.
QUERY = re.compile(r"(?<=[\w/%.~-])\?(?=[^\s?'\"=]*=)[^\s'\"()<>\[\]]*")
REDACTED = "?[query removed]"


def without_query_strings(text: str) -> str:
    return QUERY.sub(REDACTED, text)


class QueryStringFilter(logging.Filter):
    """Rewrites a record's message (formatted with its arguments) without query strings; drops
    nothing. Exception text is left alone: tracebacks hold code, not requests."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "?" in message:
            record.msg, record.args = without_query_strings(message), None
        return True


# Merged by traitlets into JupyterHub's default logging configuration, whose handler is "console".
LOGGING_CONFIG = {
    "filters": {"gpuhub_no_query_strings": {"()": f"{__name__}.QueryStringFilter"}},
    "handlers": {"console": {"filters": ["gpuhub_no_query_strings"]}},
}
