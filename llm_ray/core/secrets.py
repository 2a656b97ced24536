"""Secrets out of everything llm-ray writes: by key name and by value.

By key: a mapping entry whose key *names* a credential (`api_key`, `secret`, `password`, `token`,
`aws_session_token`, ...) is dropped; a key that merely contains the letters (`tokens`,
`eval_tokens`, `tokenizer_path`, `tokens_per_param`) is kept: the rule looks at the key's words.
By value: in every string, URL userinfo (`https://user:pw@host/...` -> `https://***@host/...`),
strings of the known credential shapes below, and the values of the credentials in the environment
(AWS_SECRET_ACCESS_KEY, WANDB_API_KEY, RAY_AUTH_TOKEN, ...) are replaced by `***`.

Pure: no torch, Ray, Hydra or W&B here (the environment is passed in).
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

MASK = "***"
SECRET_WORDS = {"secret", "secrets", "password", "passwd", "pwd", "credential", "credentials", "token", "apikey",
                "passphrase", "auth"}
SECRET_PAIRS = {("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key"), ("session", "token")}
URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s?#]+)@")
KEY_SHAPES = re.compile(
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"                      # AWS access key ids
    r"|\bgh[pousr]_[A-Za-z0-9]{36,}\b"                     # GitHub tokens
    r"|\bhf_[A-Za-z0-9]{30,}\b"                            # Hugging Face tokens
    r"|\bxox[abposr]-[A-Za-z0-9-]{10,}\b"                  # Slack tokens
    r"|\bsk-[A-Za-z0-9_-]{20,}\b"                          # OpenAI-style secret keys
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[^-]*-----END [A-Z ]*PRIVATE KEY-----")
SECRET_ENV = re.compile(r"(SECRET|PASSWORD|API_KEY|ACCESS_KEY|(^|_)TOKEN$|_AUTH_TOKEN$|CREDENTIAL)", re.I)
MIN_SECRET_LEN = 8
"""Environment values shorter than this are not masked (a short value would mask ordinary text)."""


def key_names_a_secret(key: Any) -> bool:
    """Whether a mapping key names a credential, judged by its words (split at _ - . and case)."""
    words = []
    for part in re.split(r"[^A-Za-z0-9]+", str(key)):
        camel = part if part.isupper() or part.islower() else re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", part)
        words += camel.lower().split()
    return bool(SECRET_WORDS & set(words)) or any(p in SECRET_PAIRS for p in zip(words, words[1:]))


def secret_values(environ: Mapping[str, str]) -> tuple:
    """The values of the environment's credentials (by variable name), longest first."""
    vals = {v for k, v in environ.items() if SECRET_ENV.search(k) and v and len(v) >= MIN_SECRET_LEN}
    return tuple(sorted(vals, key=len, reverse=True))


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with URL userinfo, known key shapes and each of `secrets` replaced by ***."""
    for s in secrets:
        text = text.replace(s, MASK)
    text = URL_USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return KEY_SHAPES.sub(MASK, text)


def scrub(obj: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of a JSON-like object: entries whose key names a secret dropped, every string redacted."""
    secrets = tuple(secrets)
    if isinstance(obj, Mapping):
        return {k: scrub(v, secrets) for k, v in obj.items() if not key_names_a_secret(k)}
    if isinstance(obj, (list, tuple)):
        return type(obj)(scrub(v, secrets) for v in obj) if isinstance(obj, tuple) else [scrub(v, secrets) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj, secrets)
    return obj


def redact_sources(job, secrets: Iterable[str] = ()):
    """The job with credentials masked in data.sources (URL userinfo, key shapes, `secrets`): what a
    sweep hands its trials and writes into every record, once the driver has read the corpus."""
    import dataclasses

    sources = [redact_text(str(s), secrets) for s in job.data.sources]
    if sources == list(job.data.sources):
        return job
    return dataclasses.replace(job, data=dataclasses.replace(job.data, sources=sources))
