"""Connections to the Kubernetes API server.

In-cluster service-account config first, then ``KUBECONFIG``/``~/.kube/config``.
gpuid keeps two clients: a REST one for list/watch/get and a WebSocket one for
exec, both from the same configuration, closed together.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException
from kubernetes_asyncio.stream import WsApiClient

from gpuid.errors import ConfigError


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
    """Build a client ``Configuration`` the way kubectl users expect."""
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


async def connect(kubeconfig: str = "", pool_size: int = 100) -> KubeClients:
    conf = await load_configuration(kubeconfig, pool_size)
    rest = client.ApiClient(configuration=conf)
    ws = WsApiClient(configuration=conf)
    return KubeClients(rest=rest, ws=ws, core=client.CoreV1Api(rest), core_ws=client.CoreV1Api(ws))
