"""Default plugin: API-key authentication.

Keys are configured as SHA-256 hex digests (``clawrouter hash-key KEY`` prints
one), never in clear. A request with a known key is the actor
``api_key:<name>``; one with an unknown key is refused (401); one with no key
is anonymous when ``[auth] allow_anonymous`` is true (the default), else 401.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

from .context import ANONYMOUS, Actor
from .errors import Unauthorized
from .hookspecs import hookimpl
from .types import Scope

if TYPE_CHECKING:
    from .router import Router


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@hookimpl(trylast=True)
def actor_from_request(router: Router, scope: Scope, token: str | None) -> Actor | None:
    auth = router.config.auth
    if token is None:
        if auth.allow_anonymous:
            return ANONYMOUS
        raise Unauthorized("an API key is required (Authorization: Bearer <key>)", code="missing_api_key")
    if not auth.api_keys:
        # No keys configured: tokens are not checked (clients such as the OpenAI SDK always send one).
        return ANONYMOUS if auth.allow_anonymous else None
    digest = hash_key(token)
    for key in auth.api_keys:
        if hmac.compare_digest(digest, key.sha256.lower()):
            return Actor(f"api_key:{key.name}", "api_key", {"name": key.name})
    raise Unauthorized("unknown API key", code="invalid_api_key")
