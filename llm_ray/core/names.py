"""The one rule for a name that becomes a path (a sweep's directory, a run's directory).

`sweep.name` and `trainer.name` are joined under the storage root; a name such as `../../x`, `/abs`,
`a/b` or `''` would write outside it or over another run. Every config field that becomes a path
segment is checked here, in its dataclass's `__post_init__`.

Pure: no torch, Ray, Hydra or W&B here.
"""

from __future__ import annotations

import re

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,127}")
"""A letter or digit, then letters, digits and `. _ + = -`; at most 128 characters. No `/`, no `..`
(a name cannot start with `.`, and holds no separator to climb with), no spaces or shell metacharacters."""


def check_path_name(field: str, value) -> str:
    """`value` if it is a safe single path segment; else a ValueError naming the field and the fix."""
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise ValueError(f"{field}={value!r}: it becomes a directory under the storage root, so use one "
                         f"name of letters, digits and . _ + = - (starting with a letter or digit, at most "
                         f"128 characters, no '/'), e.g. {field}=my-run.")
    return value


def check_no_duplicates(field: str, values, key=lambda v: v) -> None:
    """ValueError naming the field and the first duplicate: two equal entries would plan two runs
    into one directory, training over each other."""
    seen = {}
    for v in values:
        k = key(v)
        if k in seen:
            raise ValueError(f"{field} lists {seen[k]!r} twice ({v!r}): two cells would train into one "
                             f"directory at once; remove the duplicate.")
        seen[k] = v
