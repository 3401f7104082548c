"""The API server's URL as logs show it carries no credentials."""

from __future__ import annotations

from kubernetes_asyncio import client as k8s_client

from adapter.kube.client import server_for_logs


async def test_credentials_in_a_kubeconfig_server_never_reach_the_logs() -> None:
    configuration = type.__call__(k8s_client.Configuration)
    configuration.host = "https://admin:s3cr3t@10.0.0.1:6443/base?token=s3cr3t#frag"
    async with k8s_client.ApiClient(configuration=configuration) as api:
        assert server_for_logs(api) == "https://10.0.0.1:6443/base"
