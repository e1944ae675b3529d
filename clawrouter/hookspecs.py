"""Every hook clawrouter calls. Each docstring is that hook's reference.

Plugins implement hooks with :data:`clawrouter.hookimpl` and are found through
entry points in the group ``clawrouter``. Registration hooks run once, when a
:class:`~clawrouter.Router` is built, and return typed objects; per-request work
calls those objects' async methods (pluggy itself is synchronous). Built-in
behaviour is registered the same way, by default plugins marked ``trylast``, so
an installed plugin's objects come first and win where names collide.

Results of ``register_*`` hooks are iterables; the router flattens them, and
for objects sharing a name (a provider, a strategy, a backend) or a
``(scheme, network)`` pair (a rail) the first one wins: installed plugins
before defaults, and among installed plugins the one loaded last, as pluggy
calls later-registered implementations first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .catalogue import ModelInfo
    from .client import PaymentSigner
    from .config import Config
    from .context import Actor
    from .demo import DemoNetwork
    from .events import Event
    from .ledger import LedgerFactory
    from .payments import PaymentRail
    from .providers.base import Provider
    from .router import Router
    from .routing import RoutingStrategy
    from .state import StateBackendFactory
    from .types import Scope

hookspec = pluggy.HookspecMarker("clawrouter")
hookimpl = pluggy.HookimplMarker("clawrouter")

__all__ = ["hookimpl", "hookspec"]


# --- registration: once, when the router is built ---------------------------------


@hookspec
def register_providers(config: Config) -> Iterable[Provider] | None:
    """Provider adapters this plugin offers.

    :param config: the validated router configuration; a plugin reads its
        providers' settings from ``config.providers[name]`` (and checks their
        ``kind``) or from ``config.plugins[<plugin name>]``.
    :returns: objects satisfying :class:`clawrouter.providers.Provider`; each
        ``name`` is matched against ``ModelInfo.provider``.

    Every entry of ``[providers]`` must be answered by some plugin, or the router
    refuses to start with an error naming the entry.

    .. versionadded:: 0.1
    """


@hookspec
def register_models(config: Config) -> Iterable[ModelInfo | dict[str, Any]] | None:
    """Catalogue entries this plugin contributes.

    :param config: the validated router configuration.
    :returns: :class:`clawrouter.catalogue.ModelInfo` objects or dicts of the
        same fields (validated, with errors naming the model and field). Models
        whose ``provider`` is not registered are left out of the catalogue.
        Entries from ``[[models]]`` in the config are added last and win.

    .. versionadded:: 0.1
    """


@hookspec
def register_routing_strategies(config: Config) -> Iterable[RoutingStrategy] | None:
    """Routing strategies this plugin offers.

    :param config: the validated router configuration.
    :returns: objects satisfying :class:`clawrouter.routing.RoutingStrategy`
        (``name``, ``rank(features, candidates, stats)``, ``cache_key(features)``);
        ``[routing] strategy`` selects one by ``name``, and a request's
        ``strategy`` constraint per request.

    .. versionadded:: 0.1
    """


@hookspec
def register_payment_rails(config: Config) -> Iterable[PaymentRail] | None:
    """Payment rails this plugin offers, each for one ``(scheme, network)``.

    :param config: the validated router configuration (``config.payments``).
    :returns: objects satisfying :class:`clawrouter.payments.PaymentRail`. With
        no rail registered, nothing is paid and the verify and settle stages
        pass requests straight through.

    .. versionadded:: 0.1
    """


@hookspec
def register_state_backends(config: Config) -> Iterable[StateBackendFactory] | None:
    """Shared-state backends (payment locks) this plugin offers.

    :param config: the validated router configuration.
    :returns: factories with a ``name`` (selected by ``[state] backend``) and
        ``create(settings) -> StateBackend``.

    .. versionadded:: 0.1
    """


@hookspec
def register_ledgers(config: Config) -> Iterable[LedgerFactory] | None:
    """Ledger backends this plugin offers.

    :param config: the validated router configuration.
    :returns: factories with a ``name`` (selected by ``[ledger] backend``) and
        ``create(settings) -> Ledger``.

    .. versionadded:: 0.1
    """


# --- outside the router: the agent-side client and the demo ---------------------------


@hookspec
def register_payment_signers() -> Iterable[PaymentSigner] | None:
    """Payment signers for the agent-side client (a payment rail's client half).

    Called when a :class:`clawrouter.client.Client` (or ``Payer``) is built
    without ``signers=``: the signers returned join the one for the wallet, so
    installing a rail's distribution lets the client pay on its networks. A
    plugin returns none when it finds no key for its chain.

    :returns: objects satisfying :class:`clawrouter.client.PaymentSigner`.

    .. versionadded:: 0.1
    """


@hookspec
def register_demo_networks() -> Iterable[DemoNetwork] | None:
    """Local chains ``clawrouter demo --network NAME`` can run on.

    :returns: objects satisfying :class:`clawrouter.demo.DemoNetwork` (``name``,
        ``description``, ``start() -> DemoChain``). The built-in ``base`` runs on
        the in-process EVM.

    .. versionadded:: 0.1
    """


# --- per request ----------------------------------------------------------------


@hookspec(firstresult=True)
def actor_from_request(router: Router, scope: Scope, token: str | None) -> Actor | Awaitable[Actor | None] | None:
    """Identify the caller. Called by the auth stage on every request.

    :param router: the router.
    :param scope: the ASGI scope (headers are in ``scope["headers"]``).
    :param token: the bearer token (``Authorization: Bearer ...`` or
        ``x-api-key``), or ``None``.
    :returns: an :class:`clawrouter.context.Actor`, an awaitable of one, or
        ``None`` to let the next implementation decide. The first non-``None``
        result wins. Raise :class:`clawrouter.errors.Unauthorized` to refuse.
        The default implementation checks API keys from ``[auth] api_keys``
        (stored as SHA-256 digests).

    .. versionadded:: 0.1
    """


# --- lifecycle and observability -----------------------------------------------------


@hookspec
def startup(router: Router) -> Awaitable[None] | None:
    """Called once when the router starts (ASGI lifespan or first request).

    :param router: the router, with its providers, rails and backends built.
    :returns: ``None`` or an awaitable, which is awaited before serving.

    .. versionadded:: 0.1
    """


@hookspec
def shutdown(router: Router) -> Awaitable[None] | None:
    """Called once when the router stops.

    :param router: the router.
    :returns: ``None`` or an awaitable, which is awaited.

    .. versionadded:: 0.1
    """


@hookspec
def handle_event(router: Router, event: Event) -> Awaitable[None] | None:
    """Observe what the router did, off the request's hot path.

    Events (``request.completed``, ``request.failed``, ``payment.settled``...)
    are queued without blocking and delivered in order by a background task;
    when the bounded queue is full, the oldest are dropped and counted. Never
    called if no plugin implements it.

    :param router: the router.
    :param event: the :class:`clawrouter.events.Event`.
    :returns: ``None`` or an awaitable, which is awaited before the next event.

    .. versionadded:: 0.1
    """
