"""Talk to a Stowage API server: ``Client`` and kubeconfig files."""
from storage.client.client import Client
from storage.client.kubeconfig import default_kubeconfig_path, load_kubeconfig, write_kubeconfig

__all__ = ["Client", "default_kubeconfig_path", "load_kubeconfig", "write_kubeconfig"]
