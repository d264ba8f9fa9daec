"""Connections to the Kubernetes API server.

In-cluster service-account config first, then ``KUBECONFIG``/``~/.kube/config``.
gpuid keeps two clients: a REST one for list/watch/get and a WebSocket one for
exec, both from the same configuration, closed together.

kubernetes_asyncio opens its aiohttp session with ``trust_env=True``: every
request, each exec included, then makes two thread-pool round trips (proxy
variables and ``~/.netrc``), a sixth of gpuid's CPU per scan in a sweep. Its
WebSocket exec also ignores the kubeconfig's ``proxy-url`` (only REST calls
pass it), and aiohttp looks up ``wss://`` URLs under ``WSS_PROXY``, so with
only ``HTTPS_PROXY`` set exec went around the proxy that list/watch used.
So the proxy is decided once, here: the kubeconfig's ``proxy-url``, else
with ``KUBE_PROXY_FROM_ENV=true`` the environment's proxy for the API
server's URL (``HTTPS_PROXY``/``HTTP_PROXY``, ``NO_PROXY``), else none; and
each client's session is rebuilt on the library's own connector (its TLS
setup untouched) with that proxy as its default and the environment off.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException
from kubernetes_asyncio.stream import WsApiClient

from gpuid.errors import ConfigError
from gpuid.options import Env

READ_BUFSIZE = 2**21  # what kubernetes_asyncio uses: one watch event may carry a 1.5 MiB object
Api = TypeVar("Api", bound=client.ApiClient)


@dataclass(frozen=True)
class KubeSettings:
    kubeconfig: str = ""  # empty: in-cluster, else ~/.kube/config
    proxy_from_env: bool = False  # off: only the kubeconfig's proxy-url; the environment is not consulted

    @classmethod
    def from_env(cls, env: Env) -> KubeSettings:
        return cls(kubeconfig=env.str("KUBECONFIG"), proxy_from_env=env.bool("KUBE_PROXY_FROM_ENV"))


@dataclass
class KubeClients:
    rest: client.ApiClient
    ws: WsApiClient
    core: client.CoreV1Api
    core_ws: client.CoreV1Api

    async def close(self) -> None:
        await self.ws.close()
        await self.rest.close()


async def load_configuration(kubeconfig: str = "", pool_size: int = 100) -> client.Configuration:
    """Build a client ``Configuration`` the way kubectl users expect (``proxy-url`` included)."""
    conf = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=conf)  # type: ignore[no-untyped-call]
    except ConfigException:
        try:
            await config.load_kube_config(config_file=kubeconfig or None, client_configuration=conf)
        except (ConfigException, OSError) as e:
            where = kubeconfig or "~/.kube/config"
            raise ConfigError(
                f"no in-cluster service account and no usable kubeconfig at {where}: {e}"
            ) from e
    conf.connection_pool_maxsize = max(conf.connection_pool_maxsize, pool_size)
    return conf


def proxy_for(server: str, *, configured: str | None, from_env: bool) -> str | None:
    """The proxy for ``server``: ``configured`` (``proxy-url``), else the environment's when asked."""
    if configured:
        return configured
    if not from_env:
        return None
    url = urllib.parse.urlsplit(server)
    if url.hostname and urllib.request.proxy_bypass(url.hostname):  # NO_PROXY
        return None
    return urllib.request.getproxies().get(url.scheme) or None


def with_session(api: Api) -> Api:
    """``api`` with its aiohttp session replaced: same connector, the configured proxy, no environment.

    The library's session has sent nothing yet; ``detach`` hands its connector
    (pool size, TLS context, client certificate) over without closing it.
    """
    rest = api.rest_client
    stock: aiohttp.ClientSession = rest.pool_manager
    rest.pool_manager = aiohttp.ClientSession(
        connector=stock.connector,
        trust_env=False,
        proxy=api.configuration.proxy or None,  # the default of every request, WebSocket exec included
        read_bufsize=READ_BUFSIZE,
    )
    stock.detach()
    return api


async def connect(kubeconfig: str = "", pool_size: int = 100, *, proxy_from_env: bool = False) -> KubeClients:
    """The REST and WebSocket clients of the configured cluster; ``pool_size`` connections each at most."""
    conf = await load_configuration(kubeconfig, pool_size)
    conf.proxy = proxy_for(conf.host or "", configured=conf.proxy, from_env=proxy_from_env)
    rest = with_session(client.ApiClient(configuration=conf))
    ws = with_session(WsApiClient(configuration=conf))
    return KubeClients(rest=rest, ws=ws, core=client.CoreV1Api(rest), core_ws=client.CoreV1Api(ws))
