"""The request pipeline, one pure-ASGI class per stage.

``AuthMiddleware → VerifyMiddleware → RouteMiddleware → SettleMiddleware →
ExecuteApp``: settle wraps execute so it sees the response complete before it
settles. Each class takes ``(app, router)`` (``ExecuteApp`` only ``router``),
passes non-HTTP scopes straight through, and works alone: the first stage to
run creates the shared :class:`~clawrouter.context.RequestContext`.
"""

from .auth import AuthMiddleware
from .execute import ExecuteApp
from .route import RouteMiddleware
from .settle import SettleMiddleware
from .verify import VerifyMiddleware

__all__ = ["AuthMiddleware", "ExecuteApp", "RouteMiddleware", "SettleMiddleware", "VerifyMiddleware"]
